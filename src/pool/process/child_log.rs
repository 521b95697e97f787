//! A mixer's stderr, carried into its parent's log (serve's or a fleet worker's) with the room it
//! works for, instead of interleaved raw with the parent's own lines.
//!
//! The spawner starts every mixer with JSON logs, so each stderr line is one `tracing` event
//! whose level can be read back; anything else on stderr (GStreamer's C code prints criticals
//! there directly) is kept as a WARN with its raw text.
//!
//! Pure: [`LineSplitter`] (pipe bytes → lines of bounded length), [`parse_line`] (a line → level
//! and message) and [`keeps`] (which lines a full queue still takes). IO: [`forward`], two tasks
//! per mixer.
//!
//! Why two tasks: a mixer writes its log synchronously, so a pipe nobody empties would stall its
//! GStreamer threads. The reader only reads, parses and queues, so it keeps the pipe empty even
//! when writing the parent's log is slow; the writer re-emits. When the bounded queue runs low,
//! debug and info lines are dropped first and counted, so warnings and errors get through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tracing::Level;

/// Longer lines are cut here (and marked `truncated`): a runaway line must not grow the parent's
/// memory, and no useful log line is this long.
pub const MAX_LINE: usize = 8 * 1024;
/// Lines waiting to be written to the parent's log.
const QUEUE: usize = 1024;
/// Once fewer slots than this are free, only WARN and ERROR lines are queued.
const RESERVE_FOR_WARNINGS: usize = 128;
/// The target re-emitted lines carry, so `RUST_LOG=costream_mixer=debug` reaches them in the
/// parent as it does in the mixer.
const TARGET: &str = "costream_mixer";

/// One line of a child's stderr, without its line break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// At most [`MAX_LINE`] bytes of the line (invalid UTF-8 replaced).
    pub text: String,
    /// The line was longer; the rest was dropped.
    pub truncated: bool,
}

/// Cuts a byte stream into lines of at most `max` bytes, keeping only the head of longer ones.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    line: Vec<u8>,
    truncated: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            line: Vec::new(),
            truncated: false,
        }
    }

    /// Feeds the next bytes read from the pipe; `on_line` gets each line they complete.
    pub fn push(&mut self, mut bytes: &[u8], mut on_line: impl FnMut(RawLine)) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.append(&bytes[..end]);
            on_line(self.take());
            bytes = &bytes[end + 1..];
        }
        self.append(bytes);
    }

    /// The pipe closed: the last line, if it had no line break.
    pub fn finish(&mut self) -> Option<RawLine> {
        (!self.line.is_empty() || self.truncated).then(|| self.take())
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = self.max - self.line.len();
        if bytes.len() > room {
            self.line.extend_from_slice(&bytes[..room]);
            self.truncated = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn take(&mut self) -> RawLine {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        RawLine {
            text: String::from_utf8_lossy(&line).into_owned(),
            truncated: std::mem::take(&mut self.truncated),
        }
    }
}

/// A mixer's log line, ready to be written by the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixerLine {
    pub level: Level,
    /// The mixer's message with its fields (and its spans' fields) appended as `key=value`, or
    /// the raw text of a line that was not one of its JSON events.
    pub message: String,
    pub truncated: bool,
}

/// Reads one stderr line; `None` for a blank one.
pub fn parse_line(raw: RawLine) -> Option<MixerLine> {
    let text = raw.text.trim_end();
    if text.trim_start().is_empty() {
        return None;
    }
    if let Some((level, message)) = parse_event(text) {
        return Some(MixerLine {
            level,
            // JSON decoding turns an escaped `\n` back into a line break: a display name or an
            // error string must not forge lines in serve's text log.
            message: without_line_breaks(&message),
            truncated: raw.truncated,
        });
    }
    Some(MixerLine {
        // A cut-off JSON event still says its level near the start.
        level: sniff_level(text).unwrap_or(Level::WARN),
        message: text.to_string(),
        truncated: raw.truncated,
    })
}

/// `text` with CR, LF and other control characters escaped (`\n`), so it stays one line.
fn without_line_breaks(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// A `tracing-subscriber` JSON event: `level`, `fields` (`message` among them), maybe `spans`.
fn parse_event(text: &str) -> Option<(Level, String)> {
    if !text.starts_with('{') {
        return None;
    }
    let Value::Object(mut event) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let level = event.get("level")?.as_str()?.parse::<Level>().ok()?;
    let mut fields = match event.remove("fields") {
        Some(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    let mut message = match fields.remove("message") {
        Some(Value::String(message)) => message,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let spans = match event.remove("spans") {
        Some(Value::Array(spans)) => spans,
        _ => Vec::new(),
    };
    let span_fields = spans
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|span| span.iter().filter(|(key, _)| *key != "name"));
    for (key, value) in span_fields.chain(&fields) {
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(key);
        message.push('=');
        push_value(&mut message, value);
    }
    Some((level, message))
}

/// Like `tracing`'s text format: bare when unambiguous, quoted otherwise.
fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::String(s)
            if !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=') =>
        {
            out.push_str(s)
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `"level":"WARN"` near the start of a line too long to parse.
fn sniff_level(text: &str) -> Option<Level> {
    const KEY: &str = "\"level\":\"";
    if !text.starts_with('{') {
        return None;
    }
    let head = text.get(..text.len().min(256)).unwrap_or(text);
    let start = head.find(KEY)? + KEY.len();
    let len = head[start..].find('"')?;
    head[start..start + len].parse().ok()
}

/// Whether a line at `level` is queued when `free` slots are left: the last ones are kept for
/// warnings and errors.
pub fn keeps(level: Level, free: usize) -> bool {
    free > 0 && (free >= RESERVE_FOR_WARNINGS || level <= Level::WARN)
}

/// The room a mixer works for: unknown while it waits warm in the pool, set once when it is
/// attached. Lines before that carry no room.
#[derive(Debug, Clone, Default)]
pub struct LogRoom(Arc<OnceLock<RoomTag>>);

#[derive(Debug)]
struct RoomTag {
    room: String,
    epoch: u64,
}

impl LogRoom {
    pub fn set(&self, room: &str, epoch: u64) {
        let _ = self.0.set(RoomTag {
            room: room.to_string(),
            epoch,
        });
    }
}

/// Re-emits everything `stderr` carries through this process's `tracing`, tagged `mixer_pid` and
/// (once `LogRoom::set` is called) `room` and `epoch`. Both tasks end when the mixer closes its
/// stderr, i.e. when it exits. Must be called inside a Tokio runtime.
pub fn forward(stderr: impl AsyncRead + Unpin + Send + 'static, pid: Option<u32>) -> LogRoom {
    let room = LogRoom::default();
    let dropped = Arc::new(AtomicU64::new(0));
    let (lines, rx) = mpsc::channel(QUEUE);
    tokio::spawn(read(stderr, lines, dropped.clone()));
    tokio::spawn(write(rx, pid, room.clone(), dropped));
    room
}

async fn read(
    mut stderr: impl AsyncRead + Unpin,
    lines: mpsc::Sender<MixerLine>,
    dropped: Arc<AtomicU64>,
) {
    let queue = |raw: RawLine| {
        let Some(line) = parse_line(raw) else { return };
        if !keeps(line.level, lines.capacity()) || lines.try_send(line).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut buf = vec![0; 8 * 1024];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => splitter.push(&buf[..n], queue),
        }
    }
    if let Some(raw) = splitter.finish() {
        queue(raw);
    }
}

async fn write(
    mut lines: mpsc::Receiver<MixerLine>,
    pid: Option<u32>,
    room: LogRoom,
    dropped: Arc<AtomicU64>,
) {
    while let Some(line) = lines.recv().await {
        emit(&line, pid, room.0.get());
        report_dropped(&dropped, pid, room.0.get());
    }
    report_dropped(&dropped, pid, room.0.get());
}

fn emit(line: &MixerLine, pid: Option<u32>, tag: Option<&RoomTag>) {
    // `tracing` wants the level of a call site at compile time: one per level.
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                target: TARGET,
                parent: None,
                $level,
                room = tag.map(|t| tracing::field::display(&t.room)),
                epoch = tag.map(|t| t.epoch),
                mixer_pid = pid,
                truncated = line.truncated.then_some(true),
                "{}",
                line.message
            )
        };
    }
    match line.level {
        Level::ERROR => at!(Level::ERROR),
        Level::WARN => at!(Level::WARN),
        Level::INFO => at!(Level::INFO),
        Level::DEBUG => at!(Level::DEBUG),
        _ => at!(Level::TRACE),
    }
}

fn report_dropped(dropped: &AtomicU64, pid: Option<u32>, tag: Option<&RoomTag>) {
    let count = dropped.swap(0, Ordering::Relaxed);
    if count > 0 {
        tracing::warn!(
            parent: None,
            room = tag.map(|t| tracing::field::display(&t.room)),
            epoch = tag.map(|t| t.epoch),
            mixer_pid = pid,
            dropped = count,
            "mixer log lines dropped: this process's log fell behind"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<RawLine> {
        let mut splitter = LineSplitter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |line| out.push(line));
        }
        out.extend(splitter.finish());
        out
    }

    fn raw(text: &str) -> RawLine {
        RawLine {
            text: text.into(),
            truncated: false,
        }
    }

    #[test]
    fn lines_are_split_across_reads_and_the_last_one_is_kept() {
        let got = lines(64, &[b"one\ntw", b"o\r\n", b"\nthree"]);
        let texts: Vec<_> = got.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["one", "two", "", "three"]);
        assert!(got.iter().all(|l| !l.truncated));
    }

    #[test]
    fn an_oversize_line_keeps_its_head_and_the_next_line_is_whole() {
        let long = [b'x'; 50];
        let got = lines(16, &[&long[..30], &long[30..], b"\nnext\n"]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].text, "x".repeat(16));
        assert!(got[0].truncated);
        assert_eq!(got[1], raw("next"));
    }

    #[test]
    fn an_escaped_line_break_in_a_message_does_not_forge_a_line() {
        let line = r#"{"level":"INFO","fields":{"message":"joined\nERROR forged line"}}"#;
        let parsed = parse_line(RawLine {
            text: line.to_string(),
            truncated: false,
        })
        .unwrap();
        assert_eq!(parsed.message, "joined\\nERROR forged line");
        assert!(!parsed.message.contains('\n'));
    }

    #[test]
    fn a_json_event_keeps_its_level_message_and_fields() {
        let line = r#"{"timestamp":"2025-01-01T00:00:00Z","level":"INFO","fields":{"message":"input added","input":"p1","port":5004}}"#;
        let parsed = parse_line(raw(line)).unwrap();
        assert_eq!(parsed.level, Level::INFO);
        assert_eq!(parsed.message, "input added input=p1 port=5004");
        assert!(!parsed.truncated);
    }

    #[test]
    fn span_fields_come_first_and_odd_values_are_quoted() {
        let line = r#"{"level":"ERROR","fields":{"message":"add output failed","error":"no route to host"},"spans":[{"name":"output","output":"o1"}]}"#;
        let parsed = parse_line(raw(line)).unwrap();
        assert_eq!(parsed.level, Level::ERROR);
        assert_eq!(
            parsed.message,
            r#"add output failed output=o1 error="no route to host""#
        );
    }

    #[test]
    fn a_line_that_is_not_an_event_is_a_warning_with_its_raw_text() {
        let critical = "(costream:123): GStreamer-CRITICAL **: gst_object_unref: assertion failed";
        assert_eq!(
            parse_line(raw(critical)),
            Some(MixerLine {
                level: Level::WARN,
                message: critical.into(),
                truncated: false,
            })
        );
        // JSON, but not a log event.
        assert_eq!(parse_line(raw(r#"{"a":1}"#)).unwrap().level, Level::WARN);
        assert_eq!(parse_line(raw("   ")), None);
    }

    #[test]
    fn a_cut_off_event_keeps_its_level() {
        let line = format!(
            r#"{{"timestamp":"2025-01-01T00:00:00Z","level":"DEBUG","fields":{{"message":"{}"#,
            "y".repeat(MAX_LINE)
        );
        let mut got = lines(MAX_LINE, &[line.as_bytes(), b"\n"]);
        let parsed = parse_line(got.remove(0)).unwrap();
        assert_eq!(parsed.level, Level::DEBUG);
        assert!(parsed.truncated);
        assert_eq!(parsed.message.len(), MAX_LINE);
    }

    #[test]
    fn a_filling_queue_keeps_its_last_slots_for_warnings() {
        assert!(keeps(Level::DEBUG, RESERVE_FOR_WARNINGS));
        assert!(!keeps(Level::INFO, RESERVE_FOR_WARNINGS - 1));
        assert!(keeps(Level::WARN, 1));
        assert!(keeps(Level::ERROR, 1));
        assert!(!keeps(Level::ERROR, 0));
    }

    /// Captures the JSON log of the current thread.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn events(&self) -> Vec<Value> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }

        async fn wait_for(&self, count: usize) -> Vec<Value> {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let events = self.events();
                if events.len() >= count || tokio::time::Instant::now() > deadline {
                    return events;
                }
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test]
    async fn lines_carry_the_room_once_the_mixer_is_attached() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .with_max_level(Level::DEBUG)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let (mut mixer, stderr) = tokio::io::duplex(1024);
        let room = forward(stderr, Some(42));
        mixer
            .write_all(b"{\"level\":\"INFO\",\"fields\":{\"message\":\"warm\"}}\n")
            .await
            .unwrap();
        assert_eq!(captured.wait_for(1).await.len(), 1);
        room.set("r1", 7);
        mixer
            .write_all(b"GStreamer-CRITICAL **: oops\n")
            .await
            .unwrap();
        drop(mixer);
        let events = captured.wait_for(2).await;
        assert_eq!(events.len(), 2, "{events:?}");

        let before = &events[0]["fields"];
        assert_eq!(events[0]["level"], "INFO");
        assert_eq!(before["message"], "warm");
        assert_eq!(before["mixer_pid"], 42);
        assert!(before.get("room").is_none(), "{before}");

        let after = &events[1]["fields"];
        assert_eq!(events[1]["level"], "WARN");
        assert_eq!(after["message"], "GStreamer-CRITICAL **: oops");
        assert_eq!(after["room"], "r1");
        assert_eq!(after["epoch"], 7);
    }
}
