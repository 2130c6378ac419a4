//! Request bodies: read with a size limit, gunzip with the same limit applied to the
//! decompressed size (a small gzip bomb must not become a large allocation).

use axum::body::Body;
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use std::io::Read;
use std::time::Duration;

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit, before or after decompression.
    TooLarge,
    /// A `Content-Encoding` other than identity or gzip.
    UnsupportedEncoding,
    /// Truncated or corrupt gzip.
    BadGzip,
    /// The client stopped sending or the connection broke.
    Incomplete,
    /// The body did not arrive within the request timeout.
    Timeout,
}

impl BodyError {
    /// Reason code and sentence for the response.
    pub fn reason(&self, limit: usize) -> (&'static str, String) {
        match self {
            BodyError::TooLarge => (
                "body_too_large",
                format!("the request body exceeds the {limit} byte limit (after decompression)"),
            ),
            BodyError::UnsupportedEncoding => (
                "unsupported_encoding",
                "Content-Encoding must be gzip or identity".into(),
            ),
            BodyError::BadGzip => ("bad_gzip", "the gzip body is truncated or corrupt".into()),
            BodyError::Incomplete => (
                "incomplete_body",
                "the request body was not received completely".into(),
            ),
            BodyError::Timeout => ("timeout", "the request body did not arrive in time".into()),
        }
    }
}

/// Reads the whole body (at most `limit` bytes) and decompresses it if it is gzip.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, BodyError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let gzip = match encoding.as_str() {
        "" | "identity" => false,
        "gzip" | "x-gzip" => true,
        _ => return Err(BodyError::UnsupportedEncoding),
    };
    if let Some(n) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if n > limit as u64 {
            return Err(BodyError::TooLarge);
        }
    }
    let limited = http_body_util::Limited::new(body, limit);
    let raw = match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => return Err(BodyError::Timeout),
        Ok(Err(e)) => {
            return Err(
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    BodyError::TooLarge
                } else {
                    BodyError::Incomplete
                },
            )
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    if !gzip {
        return Ok(raw.to_vec());
    }
    gunzip(&raw, limit)
}

/// Decompresses at most `limit` bytes; more is [`BodyError::TooLarge`].
pub fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity((raw.len() * 4).min(limit));
    let mut d = flate2::read::MultiGzDecoder::new(raw).take(limit as u64 + 1);
    d.read_to_end(&mut out).map_err(|_| BodyError::BadGzip)?;
    if out.len() > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_limits_apply_after_decompression() {
        let data = vec![b'a'; 100_000];
        let z = gz(&data);
        assert!(z.len() < 1_000);
        assert_eq!(gunzip(&z, 100_000).unwrap(), data);
        assert_eq!(gunzip(&z, 99_999).unwrap_err(), BodyError::TooLarge);
        assert_eq!(
            gunzip(&z[..z.len() / 2], 100_000).unwrap_err(),
            BodyError::BadGzip
        );
        assert_eq!(
            gunzip(b"not gzip at all", 100).unwrap_err(),
            BodyError::BadGzip
        );
    }
}
