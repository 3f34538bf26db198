//! Request bodies meet limits, never memory: every body must keep arriving
//! (`api.body_timeout` without a byte is answered 408), and multipart bodies are parsed
//! under constraints (`api.max_part_header_bytes` per part's headers, `api.max_parts`,
//! `api.max_field_bytes` per form field, `api.max_upload_bytes` for the file and the body).
//! multer keeps a part's headers in memory until their blank line and has no limit of its
//! own for them, so [`PartGuard`] follows the body's structure as it streams past and
//! stops a header block (or preamble) that grows too long.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::{Stream, StreamExt};

use super::{ApiError, AppState};

/// No byte of the request body arrived for `api.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no byte of the request body arrived for {}s (api.body_timeout)", .0.as_secs_f64())]
pub(crate) struct BodyTimeout(Duration);

/// A multipart body broke one of the limits [`PartGuard`] keeps.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PartLimit {
    /// A part's header block (or the preamble before the first boundary) is too long.
    #[error("a part's headers are longer than api.max_part_header_bytes = {0} bytes")]
    Header(u64),
}

/// Middleware: the request body ends with [`BodyTimeout`] when no byte arrives for
/// `api.body_timeout`; extractors then answer 408 (see [`ApiError`]'s conversions).
pub(crate) async fn body_timeout(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let timeout = state.config.api.body_timeout;
    let (parts, body) = request.into_parts();
    let stream = futures::stream::unfold(Some(body.into_data_stream()), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(stream))),
            Ok(Some(Err(e))) => Some((Err(axum::BoxError::from(e)), None)),
            Ok(None) => None,
            Err(_) => Some((Err(axum::BoxError::from(BodyTimeout(timeout))), None)),
        }
    });
    next.run(Request::from_parts(parts, Body::from_stream(stream))).await
}

/// Whether `e` or one of its causes is a `T`.
pub(crate) fn caused_by<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cause = e.source();
    }
    None
}

/// A `multipart/form-data` body, not yet parsed: [`Multipart::fields`] parses it under
/// the API's limits.
pub(crate) struct Multipart {
    body: Body,
    boundary: String,
}

/// Why a body is not multipart (always 415).
pub(crate) type MultipartRejection = ApiError;

impl FromRequest<Arc<AppState>> for Multipart {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &Arc<AppState>) -> Result<Self, ApiError> {
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let boundary = multer::parse_boundary(content_type).map_err(|e| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not_multipart",
                format!("send the file as multipart/form-data: {e}"),
            )
        })?;
        Ok(Self { body: request.into_body(), boundary })
    }
}

/// The limits one multipart body is parsed under.
pub(crate) struct FormLimits<'a> {
    /// The field holding the file, allowed `file_bytes`.
    pub file_field: &'a str,
    /// Largest file (and, with a little room for the rest, body).
    pub file_bytes: u64,
    /// Largest other field.
    pub field_bytes: u64,
    /// Longest header block of a part.
    pub header_bytes: u64,
}

impl Multipart {
    /// Parse the body as its parts stream in, under `limits`.
    pub(crate) fn fields(self, limits: &FormLimits<'_>) -> multer::Multipart<'static> {
        let guard = PartGuard::new(self.body.into_data_stream(), &self.boundary, limits.header_bytes);
        let size = multer::SizeLimit::new()
            .whole_stream(limits.file_bytes.saturating_add(64 * 1024))
            .per_field(limits.field_bytes)
            .for_field(limits.file_field, limits.file_bytes);
        multer::Multipart::with_constraints(guard, self.boundary, multer::Constraints::new().size_limit(size))
    }
}

/// Where in a multipart body the bytes going past are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    /// Before the first boundary: ends at `--boundary`.
    Preamble,
    /// A delimiter's line and the part's headers: end at the blank line.
    Headers,
    /// Just after a delimiter: `--` closes the body, anything else begins a part's headers.
    Delimiter,
    /// A part's content: ends at `CRLF--boundary`.
    Content,
    /// After the closing delimiter: not looked at.
    Epilogue,
}

/// Passes a multipart body through unchanged, failing with [`PartLimit::Header`] when the
/// preamble or a part's header block grows past `max_header` bytes. It finds the same
/// delimiters multer does: `--boundary` first, then `CRLF--boundary` after each part's
/// content, each part's headers ending at the first `CRLFCRLF` after the delimiter line.
pub(crate) struct PartGuard<S> {
    inner: S,
    first: Vec<u8>,
    delimiter: Vec<u8>,
    region: Region,
    /// Bytes of the current region held over from the previous chunk, where a pattern may begin.
    carry: Vec<u8>,
    /// Bytes of the current region before `carry`.
    before: u64,
    max_header: u64,
    failed: bool,
}

const BLANK_LINE: &[u8] = b"\r\n\r\n";

impl<S> PartGuard<S> {
    pub(crate) fn new(inner: S, boundary: &str, max_header: u64) -> Self {
        Self {
            inner,
            first: format!("--{boundary}").into_bytes(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            region: Region::Preamble,
            carry: Vec::new(),
            before: 0,
            max_header,
            failed: false,
        }
    }

    /// Follow `chunk` through the body's regions.
    fn follow(&mut self, chunk: &[u8]) -> Result<(), PartLimit> {
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        // The current region began `before` bytes before `window[start]`.
        let mut start = 0;
        loop {
            let pattern: &[u8] = match self.region {
                Region::Preamble => &self.first,
                Region::Delimiter => {
                    // `--` right after a delimiter closes the body; else the part's headers follow.
                    let Some(next) = window.get(start..start + 2) else {
                        self.carry = window.split_off(start);
                        return Ok(());
                    };
                    self.region = if next == b"--" { Region::Epilogue } else { Region::Headers };
                    continue;
                }
                Region::Headers => BLANK_LINE,
                Region::Content => &self.delimiter,
                Region::Epilogue => return Ok(()),
            };
            let limited = matches!(self.region, Region::Preamble | Region::Headers);
            let Some(at) = memchr::memmem::find(&window[start..], pattern) else {
                let length = self.before + (window.len() - start) as u64;
                if limited && length > self.max_header {
                    return Err(PartLimit::Header(self.max_header));
                }
                let keep = (pattern.len() - 1).min(window.len() - start);
                self.before = length - keep as u64;
                self.carry = window.split_off(window.len() - keep);
                return Ok(());
            };
            let end = start + at + pattern.len();
            if limited && self.before + (end - start) as u64 > self.max_header {
                return Err(PartLimit::Header(self.max_header));
            }
            self.before = 0;
            start = end;
            self.region = if self.region == Region::Headers { Region::Content } else { Region::Delimiter };
        }
    }
}

impl<S, E> Stream for PartGuard<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<axum::BoxError>,
{
    type Item = Result<Bytes, axum::BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(bytes))) => match self.follow(&bytes) {
                Ok(()) => Poll::Ready(Some(Ok(bytes))),
                Err(limit) => {
                    self.failed = true;
                    Poll::Ready(Some(Err(limit.into())))
                }
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The answer to a multipart body that broke a limit or could not be read.
pub(crate) fn multipart_error(e: &multer::Error, file_field: &str, file_bytes: u64) -> ApiError {
    let too_large = |message: String| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message);
    match e {
        multer::Error::StreamSizeExceeded { .. } => {
            too_large(format!("the upload is larger than api.max_upload_bytes = {file_bytes} bytes"))
        }
        multer::Error::FieldSizeExceeded { field_name, limit } => match field_name.as_deref() {
            Some(name) if name == file_field => {
                too_large(format!("the upload is larger than api.max_upload_bytes = {file_bytes} bytes"))
            }
            name => too_large(format!(
                "the form field `{}` is longer than api.max_field_bytes = {limit} bytes",
                name.unwrap_or("")
            )),
        },
        multer::Error::StreamReadFailed(cause) => {
            if let Some(timeout) = caused_by::<BodyTimeout>(cause.as_ref()) {
                return timed_out(timeout);
            }
            if let Some(limit) = caused_by::<PartLimit>(cause.as_ref()) {
                return too_large(limit.to_string());
            }
            ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", format!("cannot read the body: {cause}"))
        }
        other => ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", format!("malformed multipart body: {other}")),
    }
}

/// 408 for a body that stopped arriving.
pub(crate) fn timed_out(timeout: &BodyTimeout) -> ApiError {
    ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", timeout.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max: u64) -> PartGuard<futures::stream::Empty<Result<Bytes, std::io::Error>>> {
        PartGuard::new(futures::stream::empty(), "b", max)
    }

    const BODY: &[u8] = b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nhello\r\n--b\r\n\
                          Content-Disposition: form-data; name=\"g\"\r\n\r\nx\r\n--b--\r\n";

    #[test]
    fn a_well_formed_body_passes_in_chunks_of_any_size() {
        for size in 1..BODY.len() {
            let mut g = guard(64);
            for chunk in BODY.chunks(size) {
                g.follow(chunk).unwrap_or_else(|e| panic!("chunks of {size}: {e}"));
            }
            assert_eq!(g.region, Region::Epilogue, "chunks of {size}");
        }
    }

    #[test]
    fn a_long_header_or_preamble_is_stopped_however_it_is_cut() {
        let mut endless = b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\nX: ".to_vec();
        endless.extend(std::iter::repeat_n(b'a', 1000));
        for size in [1, 7, 100, 2000] {
            let mut g = guard(100);
            let refused = endless.chunks(size).any(|c| g.follow(c).is_err());
            assert!(refused, "chunks of {size}");
            assert!(g.carry.len() < 8, "nothing held: {}", g.carry.len());
        }
        let mut g = guard(100);
        assert!(g.follow(&[b'p'; 101]).is_err(), "preamble");
        // Content is not limited here (multer's field limits are).
        let mut g = guard(100);
        let mut content = BODY[..50].to_vec();
        content.extend(std::iter::repeat_n(b'c', 10_000));
        assert!(g.follow(&content).is_ok());
        assert_eq!(g.region, Region::Content);
    }
}
