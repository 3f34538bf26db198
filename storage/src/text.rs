//! The one CSV dialect shardflow reads, for uploads, fitting and publishing alike: text in
//! UTF-8, or UTF-16 / UTF-8 behind a byte-order mark; a header row; rows ending in `\n`
//! (a `\r` before it is trimmed); an empty field, or (in any case) `NaN`, `NA`, `N/A`,
//! `null`, `None` or `<NA>`, is null, as pandas reads them. Binary content is refused up
//! front.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;

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
