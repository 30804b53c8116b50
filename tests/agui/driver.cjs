// Drives a Switchboard pod with AG-UI's official client (`@ag-ui/client`'s HttpAgent), for tests/gateway/agui.rs.
// One JSON command per stdin line, one JSON answer per stdout line:
//   {op:"agent", url, headers?, threadId}            a fresh client on a thread
//   {op:"url", url}                                  the same client, another pod
//   {op:"say", text, tools?}                         a user message, then a run
//   {op:"resume", interruptId, status, payload?}     a run answering an interrupt
//   {op:"tool", toolCallId, content, tools?}         a frontend tool's result, then a run
// An answer: {ok, events:[{type, ...}], outcome?, interrupts?, result?, error?, messages, pending}.
const { HttpAgent } = require("@ag-ui/client");
const readline = require("node:readline");

let agent = null;
let counter = 0;
const id = (p) => `${p}-${Date.now().toString(36)}-${++counter}`;

async function run(params) {
  const events = [];
  let outcome = null;
  let interrupts = null;
  let runError = null;
  const subscriber = {
    onEvent: ({ event }) => {
      const e = { type: event.type };
      for (const k of ["messageId", "delta", "toolCallId", "toolCallName", "content", "message", "code", "parentMessageId", "usage"]) {
        if (event[k] !== undefined) e[k] = event[k];
      }
      if (event.type === "MESSAGES_SNAPSHOT") e.count = event.messages.length;
      events.push(e);
    },
    onRunFinishedEvent: (p) => {
      outcome = p.event.outcome ?? null;
      interrupts = p.interrupts ?? null;
    },
    onRunErrorEvent: ({ event }) => {
      runError = { message: event.message, code: event.code };
    },
  };
  try {
    const r = await agent.runAgent(params, subscriber);
    return { ok: true, events, outcome, interrupts, runError, result: r.result ?? null };
  } catch (e) {
    return { ok: false, events, error: String(e && e.message ? e.message : e) };
  }
}

async function handle(cmd) {
  switch (cmd.op) {
    case "agent":
      agent = new HttpAgent({ url: cmd.url, headers: cmd.headers || {}, threadId: cmd.threadId });
      return { ok: true };
    case "url":
      agent.url = cmd.url;
      return { ok: true };
    case "say":
      agent.addMessage({ id: id("user"), role: "user", content: cmd.text });
      return await run({ tools: cmd.tools || [] });
    case "resume":
      return await run({ resume: [{ interruptId: cmd.interruptId, status: cmd.status, payload: cmd.payload }] });
    case "tool":
      agent.addMessage({ id: id("tool"), role: "tool", toolCallId: cmd.toolCallId, content: cmd.content });
      return await run({ tools: cmd.tools || [] });
    default:
      return { ok: false, error: `unknown op ${cmd.op}` };
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  let answer;
  try {
    answer = await handle(JSON.parse(line));
  } catch (e) {
    answer = { ok: false, error: String(e) };
  }
  if (agent) {
    answer.messages = agent.messages.map((m) => ({ id: m.id, role: m.role, content: m.content ?? null,
      toolCalls: (m.toolCalls || []).map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })),
      toolCallId: m.toolCallId ?? null }));
    answer.pending = (agent.pendingInterrupts || []).map((i) => i.id);
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
