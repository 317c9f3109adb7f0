//! AWS rules: requests to AWS (or to the S3-compatible hosts a rule names) are signed with
//! Signature Version 4 using a key pair from the server's secret store, so a sandbox's AWS
//! SDK works with dummy credentials and never sees the real ones.
//!
//! The region and service come from the credential scope of the signature the sandbox's SDK
//! made with its dummy key (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`), else from the
//! host name (`sqs.eu-west-1.amazonaws.com`, `bucket.s3.us-west-2.amazonaws.com`,
//! `sts.amazonaws.com`). The payload hash is the one the SDK declared in
//! `x-amz-content-sha256` (S3), else the SHA-256 of the body, which the caller buffers.
//! Chunk-signed streaming uploads (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`) chain every chunk's
//! signature to the dummy key's, so they are refused: SDKs send them only when told to sign
//! payloads over plain HTTP.

use std::time::SystemTime;

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use hyper::header::HeaderMap;
use hyper::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::policy::{Destination, Host};

/// The header S3 and other services read the payload hash from.
pub const CONTENT_SHA256: &str = "x-amz-content-sha256";

/// A matched AWS rule with its key pair, ready to sign one request.
#[derive(Clone)]
pub struct AwsSigning {
    pub(crate) rule: String,
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
}

impl std::fmt::Debug for AwsSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSigning")
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

/// How the request's body is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The sandbox declared it in `x-amz-content-sha256` (a hash, `UNSIGNED-PAYLOAD`, or an
    /// unsigned streaming mode): kept as declared.
    Declared(String),
    /// The SHA-256 of the buffered body, hex.
    Hashed(String),
}

impl Payload {
    /// What a request declares, if anything; `Err` for a mode that cannot be re-signed.
    pub fn declared(headers: &HeaderMap) -> Result<Option<Self>, String> {
        let Some(v) = headers.get(CONTENT_SHA256) else {
            return Ok(None);
        };
        let v = v
            .to_str()
            .map_err(|_| format!("{CONTENT_SHA256} is not text"))?;
        if v.starts_with("STREAMING-AWS4-HMAC-SHA256") || v.starts_with("STREAMING-AWS4-ECDSA") {
            return Err(format!(
                "{CONTENT_SHA256}: {v} (chunk-signed uploads) cannot be re-signed; use HTTPS, where SDKs send UNSIGNED-PAYLOAD"
            ));
        }
        Ok(Some(Self::Declared(v.to_owned())))
    }

    /// The hash of a whole body.
    pub fn of(body: &[u8]) -> Self {
        Self::Hashed(format!("{:x}", Sha256::digest(body)))
    }
}

impl AwsSigning {
    /// The rule's name.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// Replaces the request's signature with one made with the rule's key pair.
    pub fn sign(
        &self,
        parts: &mut Parts,
        dest: &Destination,
        payload: &Payload,
    ) -> Result<(), String> {
        let (region, service) = scope(&parts.headers, dest)?;
        // The sandbox's own signature and the headers it made with its dummy key go; the
        // signer sets its own.
        for name in ["authorization", "x-amz-date", "x-amz-security-token"] {
            parts.headers.remove(name);
        }
        let host = match (dest.host(), dest.port()) {
            (h, 443) => h.to_string(),
            (h, p) => format!("{h}:{p}"),
        };
        let uri = format!(
            "https://{host}{}",
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = match payload {
            Payload::Declared(v) if v == "UNSIGNED-PAYLOAD" => SignableBody::UnsignedPayload,
            Payload::Declared(v) if v == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => {
                SignableBody::StreamingUnsignedPayloadTrailer
            }
            Payload::Declared(v) | Payload::Hashed(v) => SignableBody::Precomputed(v.clone()),
        };
        let mut settings = SigningSettings::default();
        if matches!(payload, Payload::Declared(_)) || service == "s3" {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let identity = AwsCredentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "warren-secret-store",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name(&service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| format!("failed to sign for AWS: {e}"))?
            .into();
        let request = SignableRequest::new(
            parts.method.as_str(),
            uri,
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            body,
        )
        .map_err(|e| format!("failed to sign for AWS: {e}"))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| format!("failed to sign for AWS: {e}"))?
            .into_parts();
        let mut signed = hyper::Request::from_parts(std::mem::replace(parts, empty_parts()), ());
        instructions.apply_to_request_http1x(&mut signed);
        *parts = signed.into_parts().0;
        Ok(())
    }
}

fn empty_parts() -> Parts {
    hyper::Request::new(()).into_parts().0
}

/// The region and service of a request.
fn scope(headers: &HeaderMap, dest: &Destination) -> Result<(String, String), String> {
    if let Some(scope) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(scope_of_signature)
    {
        return Ok(scope);
    }
    match dest.host() {
        Host::Name(name) => scope_of_host(name),
        Host::Ip(_) => None,
    }
    .ok_or_else(|| {
        format!(
            "cannot tell the AWS region and service of {}: sign the request (with any key) or use a regional endpoint",
            dest.host()
        )
    })
}

/// `AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/s3/aws4_request, ...`.
fn scope_of_signature(auth: &str) -> Option<(String, String)> {
    let cred = auth
        .strip_prefix("AWS4-HMAC-SHA256")?
        .split("Credential=")
        .nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    let parts: Vec<&str> = cred.split('/').collect();
    let [_, _, region, service, "aws4_request"] = parts.as_slice() else {
        return None;
    };
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    (ok(region) && ok(service)).then(|| (region.to_string(), service.to_string()))
}

fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// The scope of an AWS endpoint name.
fn scope_of_host(name: &str) -> Option<(String, String)> {
    let rest = name.strip_suffix(".amazonaws.com")?;
    let labels: Vec<&str> = rest.split('.').collect();
    // Global endpoints.
    if let [.., service] = labels.as_slice()
        && ["s3", "sts", "iam", "route53", "cloudfront"].contains(service)
    {
        return Some(("us-east-1".into(), (*service).to_owned()));
    }
    match labels.as_slice() {
        [.., service, "dualstack", region] if is_region(region) => {
            Some(((*region).to_owned(), (*service).to_owned()))
        }
        [.., service, region] if is_region(region) => {
            Some(((*region).to_owned(), (*service).to_owned()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_of_hosts_and_signatures() {
        let host = |n: &str| scope_of_host(n).map(|(r, s)| format!("{r}/{s}"));
        assert_eq!(
            host("sqs.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1/sqs")
        );
        assert_eq!(
            host("bucket.s3.us-west-2.amazonaws.com").as_deref(),
            Some("us-west-2/s3")
        );
        assert_eq!(
            host("s3.dualstack.ap-south-1.amazonaws.com").as_deref(),
            Some("ap-south-1/s3")
        );
        assert_eq!(
            host("bucket.s3.amazonaws.com").as_deref(),
            Some("us-east-1/s3")
        );
        assert_eq!(host("sts.amazonaws.com").as_deref(), Some("us-east-1/sts"));
        assert_eq!(host("example.com"), None);
        assert_eq!(host("weird.amazonaws.com"), None);
        let auth = "AWS4-HMAC-SHA256 Credential=DUMMY/20250101/eu-central-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(
            scope_of_signature(auth),
            Some(("eu-central-1".into(), "dynamodb".into()))
        );
        assert_eq!(scope_of_signature("Bearer x"), None);
        assert_eq!(
            scope_of_signature("AWS4-HMAC-SHA256 Credential=a/b/../s3/aws4_request"),
            None
        );
    }

    #[test]
    fn chunk_signed_uploads_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(Payload::declared(&h), Ok(None));
        h.insert(CONTENT_SHA256, "UNSIGNED-PAYLOAD".parse().unwrap());
        assert_eq!(
            Payload::declared(&h),
            Ok(Some(Payload::Declared("UNSIGNED-PAYLOAD".into())))
        );
        h.insert(
            CONTENT_SHA256,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD".parse().unwrap(),
        );
        assert!(Payload::declared(&h).is_err());
    }

    #[test]
    fn a_signed_request_carries_the_real_key_and_none_of_the_dummy() {
        let signing = AwsSigning {
            rule: "aws".into(),
            access_key_id: "AKIDREAL".into(),
            secret_access_key: "real-secret".into(),
        };
        let req = hyper::Request::builder()
            .method("PUT")
            .uri("/bucket/key?x=1")
            .header("host", "s3.us-west-2.amazonaws.com")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=DUMMY/20250101/us-west-2/s3/aws4_request, SignedHeaders=host, Signature=00")
            .header("x-amz-security-token", "dummy-token")
            .header(CONTENT_SHA256, "UNSIGNED-PAYLOAD")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        let dest = Destination::new("s3.us-west-2.amazonaws.com", 443).unwrap();
        let payload = Payload::declared(&parts.headers).unwrap().unwrap();
        signing.sign(&mut parts, &dest, &payload).unwrap();
        let auth = parts.headers["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDREAL/"),
            "{auth}"
        );
        assert!(auth.contains("/us-west-2/s3/aws4_request"), "{auth}");
        assert!(auth.contains("x-amz-content-sha256"), "{auth}");
        assert!(!auth.contains("real-secret"));
        assert!(parts.headers.get("x-amz-security-token").is_none());
        assert!(parts.headers.get("x-amz-date").is_some());
        assert_eq!(parts.headers[CONTENT_SHA256], "UNSIGNED-PAYLOAD");
        assert!(!format!("{signing:?}").contains("real-secret"));
    }
}
