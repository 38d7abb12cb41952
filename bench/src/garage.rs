//! Garage's K2V API: the closest leaderless peer (Rust, DVV causality
//! tokens, n=3 with quorums of 2), driven as Quorra is: a write carries the
//! causality token of a read, so it replaces what it read.
//!
//! K2V requests are signed with AWS Signature V4 (service `k2v`). The
//! payload is sent unsigned (`UNSIGNED-PAYLOAD`, which Garage accepts), so
//! signing costs two short hashes and five HMACs per request, on the load
//! generator's CPU, not the store's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use ring::{digest, hmac};

/// The header that carries a causality token.
const TOKEN: &str = "x-garage-causality-token";
/// Every record lives under one sort key of its own partition key, so
/// records spread over the cluster as Quorra's keys do.
const SORT_KEY: &str = "v";

/// A day (`YYYYMMDD`) and its SigV4 signing key.
type DayKey = (String, Vec<u8>);

/// A K2V endpoint set: the nodes' API URLs, a bucket and an access key.
#[derive(Clone)]
pub struct K2v {
    http: reqwest::Client,
    /// `(base URL, host header)` per node.
    nodes: Arc<Vec<(String, String)>>,
    next: Arc<AtomicUsize>,
    bucket: String,
    key_id: String,
    secret: String,
    region: String,
    /// The signing key of the day it was made for (it changes at midnight
    /// UTC): four HMACs saved per request.
    day_key: Arc<std::sync::Mutex<Option<DayKey>>>,
}

impl K2v {
    /// K2V at `urls` (`http://127.0.0.1:3904`), bucket `bucket`, with the
    /// access key `key_id`/`secret` of region `region`.
    pub fn new(
        urls: Vec<String>,
        bucket: &str,
        key_id: &str,
        secret: &str,
        region: &str,
    ) -> anyhow::Result<Self> {
        let nodes = urls
            .into_iter()
            .map(|u| {
                let url = reqwest::Url::parse(&u).with_context(|| format!("K2V URL {u}"))?;
                if url.scheme() != "http"
                    || !matches!(url.path(), "" | "/")
                    || url.query().is_some()
                {
                    bail!("K2V URLs are http://HOST:PORT, without a path: {u}");
                }
                // Signed as the Host header the request will carry.
                let host = url.host_str().context("a K2V URL names a host")?;
                let host = match url.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_owned(),
                };
                Ok((format!("http://{host}"), host))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if nodes.is_empty() {
            bail!("no K2V URL");
        }
        Ok(Self {
            http: reqwest::Client::builder().build()?,
            nodes: Arc::new(nodes),
            next: Arc::new(AtomicUsize::new(0)),
            bucket: bucket.to_owned(),
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
            region: region.to_owned(),
            day_key: Arc::default(),
        })
    }

    fn node(&self) -> &(String, String) {
        &self.nodes[self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()]
    }

    /// A signed request for record `key`.
    fn request(
        &self,
        method: reqwest::Method,
        key: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!("K2V bench keys are letters, digits, '_' and '-' (no URI encoding): {key:?}");
        }
        let (base, host) = self.node();
        let path = format!("/{}/{key}", self.bucket);
        let query = format!("sort_key={SORT_KEY}");
        let now = time::OffsetDateTime::now_utc();
        let date = format!(
            "{:04}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day()
        );
        let stamp = format!(
            "{date}T{:02}{:02}{:02}Z",
            now.hour(),
            now.minute(),
            now.second()
        );
        let signed = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{stamp}\n\n{signed}\nUNSIGNED-PAYLOAD"
        );
        let scope = format!("{date}/{}/k2v/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let k = self.signing_key(&date);
        let signature = hex(&sign(&k, to_sign.as_bytes()));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={signed},Signature={signature}",
            self.key_id
        );
        Ok(self
            .http
            .request(method, format!("{base}{path}?{query}"))
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .header("x-amz-date", stamp)
            .header("authorization", auth))
    }

    fn signing_key(&self, date: &str) -> Vec<u8> {
        let mut cached = self
            .day_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*cached {
            Some((day, k)) if day == date => k.clone(),
            _ => {
                let k = signing_key(&self.secret, date, &self.region, "k2v");
                *cached = Some((date.to_owned(), k.clone()));
                k
            }
        }
    }

    /// Reads record `key`: its causality token (`None`: never written).
    pub async fn read(&self, key: &str) -> anyhow::Result<Option<String>> {
        let r = self
            .request(reqwest::Method::GET, key)?
            .header("accept", "application/octet-stream, application/json")
            .send()
            .await?;
        let status = r.status().as_u16();
        let token = r
            .headers()
            .get(TOKEN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = r.bytes().await?;
        match status {
            200 | 204 => Ok(token),
            404 => Ok(None),
            _ => bail!(
                "K2V read answered {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Writes record `key`, replacing what the read of `token` saw
    /// (`None`: a blind write, kept beside any value there).
    pub async fn put(&self, key: &str, value: &[u8], token: Option<String>) -> anyhow::Result<()> {
        let mut req = self
            .request(reqwest::Method::PUT, key)?
            .header("content-type", "application/octet-stream")
            .body(value.to_vec());
        if let Some(t) = token {
            req = req.header(TOKEN, t);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let body = r.bytes().await?;
        if !(200..300).contains(&status) {
            bail!(
                "K2V write answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}

/// SigV4's key for one day, region and service.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let mut k = format!("AWS4{secret}").into_bytes();
    for part in [date, region, service, "aws4_request"] {
        k = sign(&k, part.as_bytes());
    }
    k
}

fn sign(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 example (IAM ListUsers, 2015-08-30): the
    /// signing key and signature this module computes match AWS's own.
    #[test]
    fn signing_matches_the_published_aws_example() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let k = signing_key(secret, "20150830", "us-east-1", "iam");
        assert_eq!(
            hex(&k),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
        let to_sign = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\nf536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59";
        assert_eq!(
            hex(&sign(&k, to_sign.as_bytes())),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }
}
