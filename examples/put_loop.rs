//! The "limit line" of `scripts/bench/run.sh`: a bare `PutObject` loop on the same SDK
//! and client settings as mastomedia's S3 backend (`src/store/s3.rs`: aws-sdk-s3 with the
//! rustls client, path-style addressing, checksums only when required, no SDK retries),
//! with no journal, no header logic (no ACL, Content-Type or Cache-Control), no multipart
//! and no listing. It measures what the server and the SDK can take for a given tree and
//! concurrency, so that `migrate` can be stated as a share of it.
//!
//! ```text
//! cargo run --release --example put_loop -- ENDPOINT BUCKET DIR CONCURRENCY [BUFFER]
//! ```
//!
//! Without `BUFFER` every file is read into memory first (`tokio::fs::read`) and sent from
//! there. With `BUFFER` (bytes) the body is streamed from the file by the SDK's
//! `ByteStream::read_from().path(…).buffer_size(BUFFER)`, the way `src/store/s3/transfer.rs`
//! sends a file (which leaves the SDK's default buffer of 4096 bytes): this shows what the
//! read size costs on the same SDK, server and tree.
//!
//! Credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`. Every regular
//! file below `DIR` is uploaded once, under its path relative to `DIR`, `CONCURRENCY`
//! requests in flight. Prints one JSON line on stdout:
//! `{"files": N, "bytes": N, "failed": N, "seconds": F}` (seconds from the first request to
//! the last answer, file reading included). Exits 2 on bad arguments, 1 when an upload fails.

use std::path::{Path, PathBuf};
use std::time::Instant;

use aws_credential_types::Credentials;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_smithy_http_client::tls;
use futures::stream::{self, StreamExt};

/// Regular files below `dir`, depth first, sorted per folder (the order migrate walks).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (endpoint, bucket, dir, concurrency, buffer) = match args.as_slice() {
        [e, b, d, c] => (e, b, d, c, None),
        [e, b, d, c, n] => match n.parse::<usize>() {
            Ok(n) if n > 0 => (e, b, d, c, Some(n)),
            _ => {
                eprintln!("put_loop: BUFFER must be a positive number of bytes, e.g. 4096");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: put_loop ENDPOINT BUCKET DIR CONCURRENCY [BUFFER]");
            std::process::exit(2);
        }
    };
    let Ok(concurrency) = concurrency.parse::<usize>() else {
        eprintln!("put_loop: CONCURRENCY must be a whole number, e.g. 8");
        std::process::exit(2);
    };
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default();
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key_id, secret, None, None, "put-loop"))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::disabled())
        .endpoint_url(endpoint.clone())
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let root = PathBuf::from(dir);
    let mut files = Vec::new();
    if let Err(e) = walk(&root, &mut files) {
        eprintln!("put_loop: cannot read {dir}: {e}");
        std::process::exit(2);
    }
    let t0 = Instant::now();
    let results: Vec<Result<u64, String>> = stream::iter(files)
        .map(|path| {
            let client = client.clone();
            let root = root.clone();
            async move {
                let key = path
                    .strip_prefix(&root)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned();
                let (body, n) = match buffer {
                    None => {
                        let bytes = tokio::fs::read(&path).await.map_err(|e| e.to_string())?;
                        let n = bytes.len() as u64;
                        (ByteStream::from(bytes), n)
                    }
                    Some(size) => {
                        let n = tokio::fs::metadata(&path)
                            .await
                            .map_err(|e| e.to_string())?
                            .len();
                        let body = ByteStream::read_from()
                            .path(&path)
                            .buffer_size(size)
                            .length(Length::Exact(n))
                            .build()
                            .await
                            .map_err(|e| e.to_string())?;
                        (body, n)
                    }
                };
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .content_length(n as i64)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("{key}: {e:?}"))?;
                Ok(n)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let seconds = t0.elapsed().as_secs_f64();
    let (mut ok, mut bytes, mut failed) = (0u64, 0u64, 0u64);
    for r in &results {
        match r {
            Ok(n) => {
                ok += 1;
                bytes += n;
            }
            Err(e) => {
                if failed == 0 {
                    eprintln!("put_loop: upload failed: {e}");
                }
                failed += 1;
            }
        }
    }
    println!(
        "{{\"files\": {ok}, \"bytes\": {bytes}, \"failed\": {failed}, \"seconds\": {seconds:.3}}}"
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
