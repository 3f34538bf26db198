//! The one CSV dialect shardflow reads, for uploads, fitting and publishing alike: text in
//! UTF-8, or UTF-16 / UTF-8 behind a byte-order mark; a header row; rows ending in `\n`
//! (a `\r` before it is trimmed); an empty field, or (in any case) `NaN`, `NA`, `N/A`,
//! `null`, `None` or `<NA>`, is null, as pandas reads them. Binary content is refused up
//! front. A record longer than a cap is refused or cut ([`RecordCap`]), never held whole.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;
use std::sync::{Arc, Mutex};

use encoding_rs_io::{DecodeReaderBytes, DecodeReaderBytesBuilder};

/// Why a file is not CSV text.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// Binary content, or the file is empty.
    #[error("{0}")]
    NotText(String),
}

/// A field that means "no value": empty, or one of [`NULL_WORDS`] in any case.
pub const NULL_PATTERN: &str = "^(?i:nan|na|n/a|null|none|<na>)?$";

/// The words that mean "no value" (any case), besides an empty field: those pandas reads
/// as missing by default that a table is likely to hold.
pub const NULL_WORDS: [&str; 6] = ["nan", "na", "n/a", "null", "none", "<na>"];

/// Whether `field` (trimmed) means "no value".
pub fn is_null(field: &str) -> bool {
    field.is_empty() || NULL_WORDS.iter().any(|w| field.eq_ignore_ascii_case(w))
}

/// Open a text file for CSV reading: refuse binary content, decode UTF-16 behind a BOM,
/// drop a UTF-8 BOM, pass other bytes through (invalid UTF-8 then fails only its row).
///
/// # Errors
/// [`TextError::NotText`] for binary content, [`TextError::Io`] when it cannot be read.
pub fn open_text(path: &Path) -> Result<DecodeReaderBytes<File, Vec<u8>>, TextError> {
    let mut file = File::open(path)?;
    sniff(&mut file)?;
    file.rewind()?;
    Ok(DecodeReaderBytesBuilder::new().utf8_passthru(true).strip_bom(true).build(file))
}

/// A CSV reader over decoded text. Rows end at `\n`, a `\r` before it is trimmed with
/// the field: with the crate's default CRLF terminator the reported line of every row after
/// a `\r\n` is one short.
pub fn csv_reader<R: Read>(text: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new().flexible(true).terminator(csv::Terminator::Any(b'\n')).from_reader(text)
}

/// Refuse binary content: a CSV is text, so its first kilobytes decode (UTF-8, or UTF-16
/// behind a BOM) without NULs or control characters other than tab, CR and LF.
fn sniff(file: &mut File) -> Result<(), TextError> {
    let mut head = Vec::with_capacity(8192);
    file.by_ref().take(8192).read_to_end(&mut head)?;
    if head.is_empty() {
        return Err(TextError::NotText("the file is empty".into()));
    }
    let mut text = Vec::new();
    DecodeReaderBytesBuilder::new().strip_bom(true).build(&head[..]).read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let sample: Vec<char> = text.chars().collect();
    // A full sample may end inside a character: leave its last two out.
    let keep = if head.len() == 8192 { sample.len().saturating_sub(2) } else { sample.len() };
    if let Some(c) =
        sample[..keep].iter().find(|c| (c.is_control() && !matches!(c, '\t' | '\r' | '\n')) || **c == '\u{fffd}')
    {
        return Err(TextError::NotText(format!(
            "binary content (character U+{:04X} in the first {} bytes)",
            u32::from(*c),
            head.len()
        )));
    }
    Ok(())
}

/// Largest CSV record read where no setting says otherwise (`api.max_record_bytes`
/// for uploads): a longer one is refused or cut, never held whole.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 1 << 20;

/// What a [`RecordCap`] does with a record longer than its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongRecord {
    /// Fail the read with [`RecordTooLong`] (a shard is all or nothing).
    Refuse,
    /// Hand the CSV reader the record's first bytes, closed, skip the rest, and note its
    /// line in [`RecordCap::cut_lines`], so that the row is reported bad.
    Cut,
}

/// A CSV record longer than the cap.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: a CSV record is longer than max_record_bytes = {max} bytes")]
pub struct RecordTooLong {
    /// Line where the record begins.
    pub line: u64,
    /// The cap.
    pub max: u64,
}

/// Lines where a [`RecordCap`] cut a record, oldest first, shared with the reader that
/// reports them.
pub type CutLines = Arc<Mutex<VecDeque<u64>>>;

/// Where a byte is in a record, as csv-core reads it (`,` between fields, `"` quoting at
/// a field's start, doubled inside quotes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

/// Follows records through a CSV byte stream.
#[derive(Debug)]
struct Records {
    cr_ends: bool,
    place: Place,
    /// Bytes of the current record so far.
    length: u64,
    /// The current line, and the line the current record began on.
    line: u64,
    record_line: u64,
}

impl Records {
    /// Follow one byte; whether it ends a record.
    fn step(&mut self, b: u8) -> bool {
        self.length += 1;
        if b == b'\n' {
            self.line += 1;
        }
        let terminator = b == b'\n' || (self.cr_ends && b == b'\r');
        self.place = match (self.place, b) {
            (Place::Quoted, b'"') => Place::QuoteInQuoted,
            (Place::Quoted, _) => Place::Quoted,
            (Place::QuoteInQuoted | Place::FieldStart, b'"') => Place::Quoted,
            (_, b',') => Place::FieldStart,
            _ if terminator => Place::FieldStart,
            _ => Place::Unquoted,
        };
        let ended = terminator && self.place == Place::FieldStart;
        if ended {
            // As csv's positions: a record begins after the last one that was not empty.
            if self.length > 1 {
                self.record_line = self.line;
            }
            self.length = 0;
        }
        ended
    }
}

/// A reader between decoded text and a CSV reader that keeps every record under `max`
/// bytes, so that a file with no newline is never held whole. It follows quoting to find
/// where records end (`\n`; also `\r` when `cr_ends`, as csv-core's default terminator
/// has it) and refuses or cuts a longer record, as [`LongRecord`] says.
#[derive(Debug)]
pub struct RecordCap<R> {
    inner: BufReader<R>,
    max: u64,
    on_long: LongRecord,
    records: Records,
    /// Skipping the rest of a cut record; then `closing` ends it for the CSV reader.
    skipping: bool,
    quoted: bool,
    skipped_lines: u64,
    closing: Closing,
    cut: CutLines,
}

/// What closes a cut record for the CSV reader: `opening`, `lines` line ends, `ending`,
/// handed out as it reads (the line ends are counted, never held).
#[derive(Debug, Default)]
struct Closing {
    opening: VecDeque<u8>,
    lines: u64,
    ending: VecDeque<u8>,
}

impl Closing {
    fn is_empty(&self) -> bool {
        self.opening.is_empty() && self.lines == 0 && self.ending.is_empty()
    }

    /// Copy the next closing bytes into `buf` (not empty); how many.
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        if self.opening.is_empty() && self.lines > 0 {
            let n = usize::try_from(self.lines).unwrap_or(usize::MAX).min(buf.len());
            buf[..n].fill(b'\n');
            self.lines -= n as u64;
            return n;
        }
        let part = if self.opening.is_empty() { &mut self.ending } else { &mut self.opening };
        let n = part.len().min(buf.len());
        for (slot, b) in buf.iter_mut().zip(part.drain(..n)) {
            *slot = b;
        }
        n
    }
}

impl<R: Read> RecordCap<R> {
    /// Cap `inner`'s records at `max` bytes.
    pub fn new(inner: R, max: u64, on_long: LongRecord, cr_ends: bool) -> Self {
        Self {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max: max.max(1),
            on_long,
            records: Records { cr_ends, place: Place::FieldStart, length: 0, line: 1, record_line: 1 },
            skipping: false,
            quoted: false,
            skipped_lines: 0,
            closing: Closing::default(),
            cut: CutLines::default(),
        }
    }

    /// The lines where records were cut, oldest first (the reader pops what it reported).
    pub fn cut_lines(&self) -> CutLines {
        self.cut.clone()
    }

    /// A cut record is over: close it for the CSV reader, with as many line ends inside
    /// quotes as its skipped part had, so that later rows keep their line numbers.
    fn close_cut(&mut self) {
        self.skipping = false;
        if self.skipped_lines == 0 {
            if self.quoted {
                self.closing.ending.push_back(b'"');
            }
        } else {
            if !self.quoted {
                self.closing.opening.extend(b",\"");
            }
            self.closing.lines = self.skipped_lines;
            self.closing.ending.push_back(b'"');
        }
        self.closing.ending.push_back(b'\n');
    }
}

impl<R: Read> Read for RecordCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if buf.is_empty() {
                return Ok(0);
            }
            if !self.closing.is_empty() {
                return Ok(self.closing.fill(buf));
            }
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                if self.skipping {
                    self.close_cut();
                    continue;
                }
                return Ok(0);
            }
            if self.skipping {
                let (mut used, mut ended) = (0, false);
                for &b in available {
                    used += 1;
                    let line = self.records.line;
                    if self.records.step(b) {
                        ended = true;
                        break;
                    }
                    self.skipped_lines += self.records.line - line;
                }
                self.inner.consume(used);
                if ended {
                    self.close_cut();
                }
                continue;
            }
            let n = available.len().min(buf.len());
            let mut copied = 0;
            let mut over = false;
            for &b in &available[..n] {
                if self.records.length >= self.max {
                    over = true;
                    break;
                }
                self.records.step(b);
                copied += 1;
            }
            buf[..copied].copy_from_slice(&available[..copied]);
            self.inner.consume(copied);
            if !over || copied > 0 {
                return Ok(copied);
            }
            let line = self.records.record_line;
            match self.on_long {
                LongRecord::Refuse => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        RecordTooLong { line, max: self.max },
                    ));
                }
                LongRecord::Cut => {
                    if let Ok(mut cut) = self.cut.lock() {
                        cut.push_back(line);
                    }
                    self.quoted = self.records.place == Place::Quoted;
                    self.skipping = true;
                    self.skipped_lines = 0;
                }
            }
        }
    }
}

/// Longest excerpt of a value quoted in a message.
const EXCERPT_CHARS: usize = 200;

/// `text` quoted for a message about it, cut to its first 200 characters (and its length
/// said) when longer, so that a reason never carries a whole field.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(text: &[u8], max: u64, on_long: LongRecord, cr_ends: bool) -> (std::io::Result<Vec<u8>>, Vec<u64>) {
        let mut cap = RecordCap::new(text, max, on_long, cr_ends);
        let cut = cap.cut_lines();
        let mut out = Vec::new();
        let read = cap.read_to_end(&mut out).map(|_| out);
        let lines = cut.lock().map(|c| c.iter().copied().collect()).unwrap_or_default();
        (read, lines)
    }

    #[test]
    fn records_under_the_cap_pass_unchanged_quotes_and_all() {
        let text = b"a,b\n\"x\ny\",\"say \"\"hi\"\"\"\n3,4\r\n";
        for cr_ends in [false, true] {
            let (out, cut) = through(text, 30, LongRecord::Refuse, cr_ends);
            assert_eq!(out.expect("read"), text.to_vec());
            assert!(cut.is_empty());
        }
    }

    #[test]
    fn a_long_record_is_refused_with_its_line() {
        let mut text = b"a,b\n1,2\n".to_vec();
        text.extend(std::iter::repeat_n(b'9', 10_000));
        let (out, _) = through(&text, 100, LongRecord::Refuse, true);
        let err = out.expect_err("refused");
        assert!(err.to_string().contains("line 3") && err.to_string().contains("max_record_bytes = 100"), "{err}");
    }

    #[test]
    fn a_cut_record_is_closed_and_later_lines_keep_their_numbers() {
        let mut text = b"a,b\n1,2\n\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', 300));
        text.extend(b"\nmore\n\"\n5,6\n");
        let (out, cut) = through(&text, 100, LongRecord::Cut, false);
        let out = out.expect("read");
        assert_eq!(cut, vec![3]);
        let mut reader = csv_reader(&out[..]);
        let rows: Vec<(u64, usize)> = reader
            .records()
            .map(|r| r.map(|r| (r.position().map_or(0, csv::Position::line), r.len())).expect("row"))
            .collect();
        assert_eq!(rows, vec![(2, 2), (3, 1), (6, 2)], "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt("abc"), "\"abc\"");
        let long = "é".repeat(1000);
        let shown = excerpt(&long);
        assert!(shown.len() < 450 && shown.ends_with("(2000 bytes)"), "{shown}");
    }
}
