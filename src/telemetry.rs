//! Logs and traces. Logs: `tracing` to stdout, JSON in production. Traces: OpenTelemetry over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard OTEL_* variables apply). A turn that crosses pods
//! (parked on one, resumed on another) stays one trace: the W3C `traceparent` travels in the parked turn's
//! stored state and in pod control messages.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Owns the tracer provider; `shutdown` flushes spans still buffered (called on exit, after draining).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            if let Err(e) = p.force_flush() {
                tracing::warn!(error = %e, "trace flush failed");
            }
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber in `log_format`.
pub fn init(log_format: crate::config::LogFormat, otlp_endpoint: Option<&str>, instance: &str) -> Telemetry {
    use crate::config::LogFormat;
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let json = match log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer().json().flatten_event(true).boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let mut failure = None;
    let (otel_layer, provider) = match otlp_endpoint.filter(|e| !e.is_empty()) {
        Some(_) => match build_provider(instance) {
            Ok(provider) => {
                let tracer = provider.tracer("switchboard");
                (Some(tracing_opentelemetry::layer().with_tracer(tracer)), Some(provider))
            }
            Err(e) => {
                failure = Some(e);
                (None, None)
            }
        },
        None => (None, None),
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = tracing_subscriber::registry().with(filter).with(fmt_layer).with(otel_layer).try_init();
    if let Some(e) = failure {
        tracing::warn!(error = %e, "OTLP trace exporter not started");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Telemetry { provider }
}

fn build_provider(instance: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("switchboard")
        .with_attribute(opentelemetry::KeyValue::new("service.instance.id", instance.to_string()))
        .build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// The current span's context as a W3C `traceparent`, if tracing is on.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote context in `traceparent`.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), traceparent.to_string());
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}
