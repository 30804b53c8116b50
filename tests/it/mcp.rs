//! MCP tools against servers not built on the client's own SDK: the Python SDK's `MCPServer` and
//! `@modelcontextprotocol/server-everything`, each a real process on a real port. Tools are offered as
//! `<server>__<tool>` with the server's schema; text, structured and image results reach the model; `isError`
//! is a tool error; `confirm_tools` globs park an MCP call for approval; a slow tool past `timeout_ms`, a tool
//! list change, a server restarted mid-session and a server down at boot are each handled without failing a
//! turn or the boot.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::support::llm::{FakeLlm, Reply};
use crate::support::mcp::McpServer;
use crate::support::tools::FakeTools;
use crate::support::ws::Client;
use switchboard::config::{Config, McpServerConfig};

fn server(name: &str, url: String, timeout_ms: u64) -> McpServerConfig {
    McpServerConfig {
        name: name.into(),
        url,
        headers: Default::default(),
        header_values: Default::default(),
        timeout_ms,
        allow: vec![],
        deny: vec!["remove_tool".into()],
    }
}

async fn with_mcp(llm: &FakeLlm, tools: &FakeTools, servers: Vec<McpServerConfig>) -> Config {
    let mut cfg = config(llm, tools);
    cfg.agents[0].mcp_servers = servers.iter().map(|s| s.name.clone()).collect();
    cfg.agents[0].confirm_tools.push("py__weather".into());
    cfg.mcp.servers = servers;
    cfg
}

/// Waits until the pod has listed `server`'s tools (its up gauge is 1).
async fn until_up(pod: &switchboard::server::Running, server: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while scrape(pod).await.find("switchboard_mcp_server_up", &[("server", server)]) != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "MCP server {server} never came up");
        sleep_ms(100).await;
    }
}

/// One turn in which the model calls `tool` with `args` and then answers; returns the turn's frames.
async fn call(c: &mut Client, llm: &FakeLlm, sid: &str, rid: &str, tool: &str, args: Value) -> Vec<Value> {
    llm.push(Reply::tool_call(&format!("c-{rid}"), tool, &args));
    llm.push(Reply::text(&["ok"]));
    send_message(c, sid, rid, &format!("use {tool}")).await;
    until_terminal(c, rid).await
}

/// The tool result the model was given in its last request.
fn given_to_model(llm: &FakeLlm) -> String {
    let last = llm.requests().last().cloned().expect("a model request");
    let msgs = last["messages"].as_array().cloned().unwrap_or_default();
    msgs.iter().rev().find(|m| m["role"] == "tool").and_then(|m| m["content"].as_str()).unwrap_or("").to_string()
}

fn result_chunk(frames: &[Value]) -> Value {
    frames
        .iter()
        .find_map(|f| f["data"]["state"]["rawResponse"].get("toolResult").cloned())
        .expect("a tool result chunk")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_server_tools_results_errors_approvals_timeouts_list_changes_and_a_restart() {
    let (llm, tools) = (FakeLlm::start().await, FakeTools::start().await);
    let mut py = McpServer::python();
    let pod = pod(with_mcp(&llm, &tools, vec![server("py", py.url(), 1_500)]).await).await;
    until_up(&pod, "py").await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;

    // Offered with the server's schema, prefixed; `deny` takes one out.
    let frames = call(&mut c, &llm, &sid, "t1", "py__echo", json!({"message": "hello mcp"})).await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
    let offered = llm.requests()[0]["tools"].clone();
    let echo = offered.as_array().expect("tools").iter().find(|t| t["function"]["name"] == "py__echo").cloned();
    assert_eq!(echo.expect("py__echo offered")["function"]["parameters"]["properties"]["message"]["type"], "string");
    assert!(!offered.to_string().contains("py__remove_tool"), "denied by mcp.servers[].deny");
    assert_eq!(result_chunk(&frames)["isError"], false);
    assert!(given_to_model(&llm).contains("hello mcp"), "{}", given_to_model(&llm));

    // Structured JSON, an image, and a tool error.
    call(&mut c, &llm, &sid, "t2", "py__tiny_image", json!({})).await;
    assert!(given_to_model(&llm).starts_with("data:image/png;base64,"), "{}", given_to_model(&llm));
    let frames = call(&mut c, &llm, &sid, "t3", "py__fail", json!({"reason": "on purpose"})).await;
    assert_eq!(result_chunk(&frames)["isError"], true, "isError is a tool error");
    assert!(given_to_model(&llm).contains("on purpose"));

    // confirm_tools globs apply: the call parks; approving runs it and the structured result reaches the model.
    llm.push(Reply::tool_call("c-w", "py__weather", &json!({"city": "Oslo"})));
    llm.push(Reply::text(&["Sunny."]));
    send_message(&mut c, &sid, "t4", "weather?").await;
    c.recv_until(|v| v["type"] == "write_confirmation_required").await;
    c.send(&json!({"action": "confirm_tool_action", "requestId": "ok", "sessionId": sid, "approved": true})).await;
    until_terminal(&mut c, "t4").await;
    let weather: Value = serde_json::from_str(&given_to_model(&llm)).expect("structured JSON");
    assert_eq!(weather["city"], "Oslo", "{weather}");

    // A slow tool past timeout_ms is a tool error; the turn goes on.
    let frames = call(&mut c, &llm, &sid, "t5", "py__slow", json!({"seconds": 4})).await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
    assert!(given_to_model(&llm).contains("no answer within 1500 ms"), "{}", given_to_model(&llm));

    // A tool added at runtime is offered once the server says the list changed.
    call(&mut c, &llm, &sid, "t6", "py__add_tool", json!({"name": "dyn_tool"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        llm.push(Reply::text(&["listing"]));
        send_message(&mut c, &sid, "t7", "anything new?").await;
        until_terminal(&mut c, "t7").await;
        if llm.requests().last().expect("request")["tools"].to_string().contains("py__dyn_tool") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "py__dyn_tool never offered");
        sleep_ms(200).await;
    }

    // The server restarts mid-session: the next call reconnects and works.
    py.kill();
    py.start();
    call(&mut c, &llm, &sid, "t8", "py__echo", json!({"message": "after restart"})).await;
    assert!(given_to_model(&llm).contains("after restart"), "{}", given_to_model(&llm));

    let m = scrape(&pod).await;
    assert!(m.value("switchboard_mcp_calls_total", &[("server", "py"), ("tool", "echo"), ("outcome", "ok")]) >= 2.0);
    assert!(m.value("switchboard_mcp_calls_total", &[("server", "py"), ("tool", "fail"), ("outcome", "error")]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_boot_fails_its_tools_not_the_boot_then_joins() {
    let (llm, tools) = (FakeLlm::start().await, FakeTools::start().await);
    let port = crate::support::ports::free_port();
    let cfg = with_mcp(&llm, &tools, vec![server("late", format!("http://127.0.0.1:{port}/mcp"), 1_000)]).await;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    let frames = call(&mut c, &llm, &sid, "d1", "late__echo", json!({"message": "x"})).await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response", "the turn goes on");
    assert_eq!(result_chunk(&frames)["isError"], true);
    assert!(!llm.requests()[0]["tools"].to_string().contains("late__"), "nothing offered while down");
    assert_eq!(scrape(&pod).await.find("switchboard_mcp_server_up", &[("server", "late")]), Some(0.0));
    // It comes up on that port: the pod connects in the background and offers its tools.
    let _late = crate::support::mcp::McpServer::python_on(port);
    until_up(&pod, "late").await;
    call(&mut c, &llm, &sid, "d2", "late__echo", json!({"message": "now here"})).await;
    assert!(given_to_model(&llm).contains("now here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_tools_run() {
    let (llm, tools) = (FakeLlm::start().await, FakeTools::start().await);
    let everything = McpServer::everything();
    let pod = pod(with_mcp(&llm, &tools, vec![server("every", everything.url(), 10_000)]).await).await;
    until_up(&pod, "every").await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    call(&mut c, &llm, &sid, "e1", "every__echo", json!({"message": "hello"})).await;
    assert_eq!(given_to_model(&llm), "Echo: hello");
    call(&mut c, &llm, &sid, "e2", "every__get-sum", json!({"a": 2, "b": 3})).await;
    assert!(given_to_model(&llm).contains('5'), "{}", given_to_model(&llm));
    let offered = llm.requests().last().expect("request")["tools"].to_string();
    assert!(offered.contains("every__get-tiny-image"), "{offered}");
}
