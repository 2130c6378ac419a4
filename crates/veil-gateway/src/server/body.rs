//! Request bodies: read with a size limit, decompress (gzip or deflate) with the same limit
//! applied to the decompressed size (a small bomb must not become a large allocation).

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
    /// A `Content-Encoding` other than identity, gzip or deflate.
    UnsupportedEncoding,
    /// Truncated or corrupt gzip.
    BadGzip,
    /// Truncated or corrupt deflate data.
    BadDeflate,
    /// The client stopped sending or the connection broke.
    Incomplete,
    /// The body did not arrive within the request timeout.
    Timeout,
}

impl BodyError {
    /// The HTTP status that answers it, for the API and the dashboard alike.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::BadGzip | BodyError::BadDeflate | BodyError::Incomplete => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// Reason code and sentence for the response.
    pub fn reason(&self, limit: usize) -> (&'static str, String) {
        match self {
            BodyError::TooLarge => (
                "body_too_large",
                format!("the request body exceeds the {limit} byte limit (after decompression)"),
            ),
            BodyError::UnsupportedEncoding => (
                "unsupported_encoding",
                "Content-Encoding must be gzip, deflate or identity".into(),
            ),
            BodyError::BadGzip => ("bad_gzip", "the gzip body is truncated or corrupt".into()),
            BodyError::BadDeflate => (
                "bad_deflate",
                "the deflate body is truncated or corrupt".into(),
            ),
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
    let coding = match encoding.as_str() {
        "" | "identity" => Coding::Identity,
        "gzip" | "x-gzip" => Coding::Gzip,
        "deflate" => Coding::Deflate,
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
    match coding {
        Coding::Identity => Ok(raw.to_vec()),
        Coding::Gzip => gunzip(&raw, limit),
        Coding::Deflate => inflate(&raw, limit),
    }
}

/// The content codings a body may arrive in.
enum Coding {
    Identity,
    Gzip,
    Deflate,
}

/// Decompresses HTTP `deflate` (zlib, RFC 1950; raw deflate as some clients send it) to at
/// most `limit` bytes.
pub fn inflate(raw: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    // A zlib stream starts with a header whose 16-bit value is a multiple of 31.
    let zlib = raw.len() >= 2
        && raw[0] & 0x0f == 8
        && u16::from_be_bytes([raw[0], raw[1]]).is_multiple_of(31);
    if zlib {
        bounded(flate2::read::ZlibDecoder::new(raw), raw.len(), limit)
    } else {
        bounded(flate2::read::DeflateDecoder::new(raw), raw.len(), limit)
    }
    .map_err(|e| match e {
        BodyError::BadGzip => BodyError::BadDeflate,
        e => e,
    })
}

/// Reads a decoder to its end, failing past `limit` bytes.
fn bounded(d: impl Read, raw_len: usize, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity((raw_len * 4).min(limit));
    d.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| BodyError::BadGzip)?;
    if out.len() > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

/// Decompresses at most `limit` bytes; more is [`BodyError::TooLarge`].
pub fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    bounded(flate2::read::MultiGzDecoder::new(raw), raw.len(), limit)
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

    #[test]
    fn deflate_zlib_and_raw_with_the_same_limit() {
        let data = vec![b'b'; 50_000];
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&data).unwrap();
        let z = z.finish().unwrap();
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        r.write_all(&data).unwrap();
        let r = r.finish().unwrap();
        for body in [&z, &r] {
            assert_eq!(inflate(body, 50_000).unwrap(), data);
            assert_eq!(inflate(body, 49_999).unwrap_err(), BodyError::TooLarge);
        }
        assert_eq!(
            inflate(&z[..z.len() / 2], 50_000).unwrap_err(),
            BodyError::BadDeflate
        );
    }
}
