//! `multipart/mixed` bodies for siblings (RFC 2046): one part per sibling,
//! each with its own headers, as Riak answers a read with `300 Multiple
//! Choices`.

/// One part: its headers and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Header name and value pairs, in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl Part {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A boundary that occurs in none of the bodies.
pub fn choose_boundary(bodies: &[&[u8]]) -> String {
    loop {
        let b: String = (0..32)
            .map(|_| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::random_range(0..36)]))
            .collect();
        if !bodies.iter().any(|body| contains(body, b.as_bytes())) {
            return b;
        }
    }
}

/// Encodes parts under `boundary`.
pub fn encode(boundary: &str, parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        for (n, v) in &p.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&p.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// The boundary parameter of a `multipart/*` content type.
pub fn boundary_of(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// Decodes a body made by [`encode`] (or any well-formed multipart body).
/// Returns `None` when it is malformed.
pub fn decode(boundary: &str, body: &[u8]) -> Option<Vec<Part>> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    let start = find(rest, delim.as_bytes())?;
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        // An empty header block is a lone CRLF; otherwise it ends at CRLFCRLF.
        let head_end = if rest.starts_with(b"\r\n") {
            (0, 2)
        } else {
            (find(rest, b"\r\n\r\n")?, 4)
        };
        let head = std::str::from_utf8(&rest[..head_end.0]).ok()?;
        let headers = head
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':')?;
                Some((n.trim().to_owned(), v.trim().to_owned()))
            })
            .collect::<Option<Vec<_>>>()?;
        rest = &rest[head_end.0 + head_end.1..];
        let next = find(rest, format!("\r\n{delim}").as_bytes())?;
        parts.push(Part {
            headers,
            body: rest[..next].to_vec(),
        });
        rest = &rest[next + 2 + delim.len()..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binary_parts() {
        let parts = vec![
            Part {
                headers: vec![("Content-Type".into(), "text/plain".into())],
                body: b"alice".to_vec(),
            },
            Part {
                headers: vec![
                    ("Content-Type".into(), "application/octet-stream".into()),
                    ("X-Quorra-Meta-k".into(), "v".into()),
                ],
                body: vec![0, 13, 10, 45, 45, 255],
            },
            Part {
                headers: vec![],
                body: vec![],
            },
        ];
        let bodies: Vec<&[u8]> = parts.iter().map(|p| p.body.as_slice()).collect();
        let b = choose_boundary(&bodies);
        let enc = encode(&b, &parts);
        assert_eq!(decode(&b, &enc), Some(parts));
    }

    #[test]
    fn decodes_a_hand_written_body() {
        let body = b"preamble\r\n--xyz\r\nContent-Type: a/b\r\n\r\none\r\n--xyz\r\nContent-Type: c/d\r\n\r\ntwo\r\n--xyz--\r\n";
        let parts = decode("xyz", body).expect("parse");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].header("content-type"), Some("a/b"));
        assert_eq!(parts[1].body, b"two");
        assert_eq!(decode("xyz", b"--xyz\r\nbroken"), None);
    }

    #[test]
    fn boundary_parameter() {
        assert_eq!(boundary_of("multipart/mixed; boundary=abc"), Some("abc"));
        assert_eq!(
            boundary_of("multipart/mixed; charset=x; boundary=\"q\""),
            Some("q")
        );
        assert_eq!(boundary_of("text/plain"), None);
    }
}
