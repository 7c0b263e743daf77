//! The two log line formats.
//!
//! - [`JsonLine`]: one flat JSON object a line: `timestamp`, `level`, `target`, `span` (the
//!   innermost span's name), `message`, then the fields of every span in scope (outermost
//!   first, inner ones winning) and of the event itself (winning over the spans'), at the top
//!   level (but `otel.*`, which only steer the exported span); numbers stay numbers. With
//!   tracing on, `trace_id` and `span_id` of the span the
//!   event belongs to.
//! - [`Human`]: `tracing_subscriber`'s full format, with ` trace_id=… span_id=…` at the end of
//!   the line when tracing is on.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::propagation;

/// The trace and span id of the span `event` belongs to, when tracing is on and it is sampled
/// in (or continues a sampled trace).
fn trace_ids<S, N>(ctx: &FmtContext<'_, S, N>, event: &Event<'_>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    if !propagation::enabled() {
        return None;
    }
    let id = match event.parent() {
        Some(id) => ctx.span(id)?.id(),
        None if event.is_contextual() => ctx.lookup_current()?.id(),
        None => return None,
    };
    let cx = tracing::dispatcher::get_default(|dispatch| {
        tracing_opentelemetry::get_otel_context(&id, dispatch)
    })?;
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

/// Flat JSON lines (see the module doc). Span fields are read as `JsonFields` formatted them.
pub struct JsonLine;

/// An event's fields as JSON values.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number);
        self.0.insert(field.name().to_owned(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

/// The fields written before the others, in this order; a span or event field of one of these
/// names does not replace them.
const HEAD: [&str; 5] = ["timestamp", "level", "target", "span", "message"];

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Map::new();
        let mut span_name = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                span_name = Some(span.name());
                let extensions = span.extensions();
                if let Some(formatted) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&formatted.fields)
                {
                    fields.extend(map);
                }
            }
        }
        let mut event_fields = Map::new();
        event.record(&mut JsonVisitor(&mut event_fields));
        let message = event_fields.remove("message");
        fields.extend(event_fields);
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut head: Vec<(&str, Value)> = vec![
            ("timestamp", timestamp.into()),
            ("level", meta.level().as_str().into()),
            ("target", meta.target().into()),
        ];
        if let Some(name) = span_name {
            head.push(("span", name.into()));
        }
        head.push(("message", message.unwrap_or_default()));
        let mut line = String::with_capacity(256);
        line.push('{');
        let mut first = true;
        let mut put = |line: &mut String, key: &str, value: &Value| {
            if !first {
                line.push(',');
            }
            first = false;
            line.push_str(&Value::from(key).to_string());
            line.push(':');
            line.push_str(&value.to_string());
        };
        for (key, value) in &head {
            put(&mut line, key, value);
        }
        for (key, value) in &fields {
            // `otel.*` fields steer the exported span (kind, name, status), not the log.
            if !HEAD.contains(&key.as_str())
                && key != "trace_id"
                && key != "span_id"
                && !key.starts_with("otel.")
            {
                put(&mut line, key, value);
            }
        }
        if let Some((trace_id, span_id)) = trace_ids(ctx, event) {
            put(&mut line, "trace_id", &trace_id.into());
            put(&mut line, "span_id", &span_id.into());
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// The full human format, trace ids appended (see the module doc).
pub struct Human {
    inner: Format<Full>,
}

impl Human {
    /// `ansi`: colours (only when writing to a terminal).
    pub fn new(ansi: bool) -> Self {
        Self {
            inner: Format::default().with_ansi(ansi),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Human
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = trace_ids(ctx, event) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        writeln!(writer, "{line} trace_id={trace_id} span_id={span_id}")
    }
}
