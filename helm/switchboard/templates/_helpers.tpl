{{/*
Names and labels, in the shape `helm create` uses so that the usual overrides work.
*/}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The in-chart Redis (redis.enabled). */}}
{{- define "switchboard.redis.fullname" -}}
{{- printf "%s-redis" (include "switchboard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Its own name label, so that selectors of the switchboard pods and Service (and the ServiceMonitor) never match it. */}}
{{- define "switchboard.redis.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
{{ include "switchboard.redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "switchboard.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* "true" when the in-chart Redis runs: redis.enabled (the default) and no external Redis given. */}}
{{- define "switchboard.inChartRedis" -}}
{{- if and .Values.redis.enabled (not .Values.redis.url) (not .Values.redis.urlFromExistingSecret) }}true{{ end }}
{{- end }}

{{/* The value of SWITCHBOARD_REDIS_URL set by the chart; empty when it comes from the Secret or is absent. */}}
{{- define "switchboard.redisUrl" -}}
{{- if include "switchboard.inChartRedis" . }}
{{- printf "redis://%s:6379" (include "switchboard.redis.fullname" .) }}
{{- else }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{/* "true" when the pods share state through Redis (however its URL arrives). */}}
{{- define "switchboard.hasRedis" -}}
{{- if or (include "switchboard.inChartRedis" .) .Values.redis.url .Values.redis.urlFromExistingSecret }}true{{ end }}
{{- end }}

{{/* The app exits at most drain.timeoutSeconds + 3 s after SIGTERM (its last wait for interrupted turns). */}}
{{- define "switchboard.terminationGracePeriodSeconds" -}}
{{- $d := .Values.drain }}
{{- $needed := add $d.preStopSeconds $d.timeoutSeconds 3 }}
{{- $grace := .Values.terminationGracePeriodSeconds | default (add $d.preStopSeconds $d.timeoutSeconds 10) }}
{{- if le (int $grace) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than drain.preStopSeconds + drain.timeoutSeconds + 3 (%d): the kubelet would kill pods before running turns end cleanly" (int $grace) (int $needed)) }}
{{- end }}
{{- int $grace }}
{{- end }}

{{/*
Contradictory values fail the render with a message naming the keys, the way the application fails at boot on
bad config (loud configuration, docs/architecture.md). values.schema.json has already checked types and shapes.
*/}}
{{- define "switchboard.validate" -}}
{{- $r := .Values.redis }}
{{- if and $r.url $r.urlFromExistingSecret }}
{{- fail "redis.url and redis.urlFromExistingSecret both give the Redis URL: set only one" }}
{{- end }}
{{- if and $r.urlFromExistingSecret (not .Values.existingSecret) }}
{{- fail "redis.urlFromExistingSecret needs existingSecret (the Secret holding SWITCHBOARD_REDIS_URL)" }}
{{- end }}
{{- if not (include "switchboard.hasRedis" .) }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled needs Redis (redis.url, redis.enabled or redis.urlFromExistingSecret): without it every pod keeps sessions in its own memory" }}
{{- end }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "replicaCount is %d but no Redis is configured: in-memory mode is single-pod. Set redis.url (external, production), redis.enabled=true (in-chart, for trying it out), redis.urlFromExistingSecret=true, or replicaCount=1" (int .Values.replicaCount)) }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if gt (int .Values.drain.pauseSeconds) (int .Values.drain.timeoutSeconds) }}
{{- fail "drain.pauseSeconds must not exceed drain.timeoutSeconds: the timeout counts from SIGTERM and includes the pause" }}
{{- end }}
{{- if and .Values.ingress.enabled (eq (dig "auth" "mode" "none" .Values.config) "none") }}
{{- fail "ingress.enabled with config.auth.mode=none would put anonymous access (every conversation, every approval) on the Ingress: set config.auth.mode=jwt (or serve API keys) first" }}
{{- end }}
{{- if and (eq (dig "auth" "mode" "none" .Values.config) "jwt") (not .Values.existingSecret) (not (dig "auth" "jwt_rs256_public_key" "" .Values.config)) (not (dig "auth" "jwks_url" "" .Values.config)) }}
{{- fail "config.auth.mode=jwt needs config.auth.jwks_url, config.auth.jwt_rs256_public_key or existingSecret with SWITCHBOARD_AUTH__JWT_HS256_SECRET; the pods would refuse to start" }}
{{- end }}
{{- if gt (int (dig "confirm" "timeout_s" 300 .Values.config)) (int (dig "session" "idle_ttl_s" 86400 .Values.config)) }}
{{- fail "config.confirm.timeout_s must not exceed config.session.idle_ttl_s" }}
{{- end }}
{{- $_ := include "switchboard.terminationGracePeriodSeconds" . }}
{{- end }}

{{/*
TOML rendering. Helm's toToml writes every number as a float (values arrive as float64) and the application's
integer keys refuse floats, so the file is written here: keys sorted, scalars and inline values first, then
sub-tables as [a.b], then lists of tables as [[a.b]].
Call with (dict "path" "" "table" $map).
*/}}
{{- define "switchboard.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "switchboard.toml.isTableList" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}
{{- $all := true }}
{{- range . }}{{ if not (kindIs "map" .) }}{{ $all = false }}{{ end }}{{ end }}
{{- if $all }}true{{ end }}
{{- end }}
{{- end }}

{{- define "switchboard.toml.value" -}}
{{- if kindIs "map" . -}}
{ {{- $first := true }}{{ range $k := keys . | sortAlpha }}{{ $v := get $ $k }}{{ if not (kindIs "invalid" $v) }}{{ if not $first }}, {{ end }}{{ $first = false }}{{ include "switchboard.toml.key" $k }} = {{ include "switchboard.toml.value" $v }}{{ end }}{{ end -}} }
{{- else if kindIs "slice" . -}}
[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "switchboard.toml.value" $v }}{{ end }}]
{{- else if kindIs "string" . -}}
{{ toJson . }}
{{- else if kindIs "bool" . -}}
{{ . }}
{{- else if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "invalid" . -}}
{{- fail "a null value cannot be written to TOML" }}
{{- else -}}
{{ . }}
{{- end }}
{{- end }}

{{- define "switchboard.toml.table" -}}
{{- $path := .path }}
{{- $t := .table }}
{{- $ks := keys $t | sortAlpha }}
{{- range $k := $ks }}
{{- $v := get $t $k }}
{{- if and (not (kindIs "invalid" $v)) (not (kindIs "map" $v)) (not (include "switchboard.toml.isTableList" $v)) }}
{{ include "switchboard.toml.key" $k }} = {{ include "switchboard.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := $ks }}
{{- $v := get $t $k }}
{{- $p := ternary (include "switchboard.toml.key" $k) (printf "%s.%s" $path (include "switchboard.toml.key" $k)) (eq $path "") }}
{{- if kindIs "map" $v }}

[{{ $p }}]
{{- include "switchboard.toml.table" (dict "path" $p "table" $v) }}
{{- end }}
{{- end }}
{{- range $k := $ks }}
{{- $v := get $t $k }}
{{- $p := ternary (include "switchboard.toml.key" $k) (printf "%s.%s" $path (include "switchboard.toml.key" $k)) (eq $path "") }}
{{- if include "switchboard.toml.isTableList" $v }}
{{- range $item := $v }}

[[{{ $p }}]]
{{- include "switchboard.toml.table" (dict "path" $p "table" $item) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
