//! `s3://BUCKET/PREFIX` on AWS S3 or an S3-compatible store. Large objects go up as a
//! multipart upload with a bounded number of parts in flight (memory stays bounded whatever
//! the dump size), part size doubling every 1,000 parts so the 10,000-part limit never caps
//! the object; any error — or the task being dropped — aborts the upload. Small objects are
//! one PutObject. With a custom endpoint, path-style addressing is used; request checksums
//! are sent only when an operation requires them (the SDK's newer default of always sending
//! them breaks several S3-compatible stores).

use super::{ChunkReceiver, Incomplete, ObjectInfo, Stored};
use anyhow::{bail, Context, Result};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use tokio::io::AsyncRead;
use tokio::task::JoinHandle;

/// Tuning of multipart uploads.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// Size of the first 1,000 parts; doubles for each further 1,000 (S3 minimum is 5 MiB).
    pub part_size: usize,
    /// Parts uploading at once; with the part being filled, bounds memory to
    /// `(parts_in_flight + 1) × part_size`.
    pub parts_in_flight: usize,
    /// Bound on one request (each retry gets its own): without it a server that stops
    /// answering mid-request hangs the job for good.
    pub attempt_timeout: std::time::Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            parts_in_flight: 2,
            attempt_timeout: std::time::Duration::from_secs(120),
        }
    }
}

/// Size of part `number` (1-based): base × 2^((number-1)/1000). With 8 MiB parts the
/// 10,000th part ends past 8 TiB, beyond S3's 5 TiB object limit.
pub fn part_size_for(base: usize, number: i32) -> usize {
    base << ((number.max(1) - 1) / 1000).min(16)
}

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    settings: S3Settings,
}

/// One readable line for a failed S3 call: the operation, the store's error code and
/// message and the HTTP status, or for a request that never got an answer, why.
fn s3_error<E>(operation: &str, e: SdkError<E, HttpResponse>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let detail = match e.as_service_error() {
        Some(service) => {
            let code = service.code().unwrap_or("an error");
            match service.message() {
                Some(message) => format!("{code}: {message}"),
                None => code.to_owned(),
            }
        }
        None => match &e {
            SdkError::TimeoutError(_) => "no answer in time".to_owned(),
            SdkError::DispatchFailure(_) => format!("could not reach the store: {}", root_cause(&e)),
            _ => root_cause(&e),
        },
    };
    match status {
        Some(status) => anyhow::anyhow!("S3 {operation} failed: {detail} (HTTP {status})"),
        None => anyhow::anyhow!("S3 {operation} failed: {detail}"),
    }
}

/// The innermost error's words (e.g. "Connection refused (os error 111)"), without the
/// SDK's wrappers and their debug forms.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Whether the store does not implement the operation (some S3-compatible servers and
/// gateways lack the optional ones).
fn not_implemented<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.as_service_error().and_then(|s| s.code());
    matches!(status, Some(501) | Some(405))
        || matches!(code, Some("NotImplemented") | Some("MethodNotAllowed"))
}

impl S3Store {
    pub async fn new(bucket: &str, prefix: &str, settings: S3Settings) -> Result<Self> {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let endpoint = shared.endpoint_url().map(str::to_owned);
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .operation_attempt_timeout(settings.attempt_timeout)
                    .build(),
            );
        if endpoint.is_some() {
            config = config.force_path_style(true);
            if shared.region().is_none() {
                config = config.region(aws_sdk_s3::config::Region::new("us-east-1"));
            }
        }
        if settings.part_size < 5 * 1024 * 1024 {
            bail!("S3 multipart parts must be at least 5 MiB");
        }
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint,
            settings,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn describe(&self) -> String {
        let location = format!("s3://{}/{}", self.bucket, self.prefix);
        match &self.endpoint {
            Some(endpoint) => format!("{location} (endpoint {})", crate::secrets::redact_url(endpoint)),
            None => location,
        }
    }

    pub async fn put(&self, key: &str, mut chunks: ChunkReceiver) -> Result<Stored> {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        // Each part gets its own buffer, sized up front, and goes out whole once it reaches
        // the part size (parts other than the last only need to be at least that big), so
        // no buffer is ever reallocated or kept alive by a split.
        // Room for the one chunk (a gzip member of at most ~1 MiB) that crosses the part size.
        let spare = crate::compress::BLOCK_SIZE + 64 * 1024;
        let mut buffer = BytesMut::with_capacity(self.settings.part_size + spare);
        let mut upload: Option<Multipart> = None;
        while let Some(chunk) = chunks.recv().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    if let Some(upload) = upload.take() {
                        upload.abort().await;
                    }
                    return Err(e);
                }
            };
            hasher.update(&chunk);
            total += chunk.len() as u64;
            buffer.extend_from_slice(&chunk);
            let part_size = part_size_for(
                self.settings.part_size,
                upload.as_ref().map_or(1, |u| u.next_number),
            );
            if buffer.len() < part_size {
                continue;
            }
            let next_capacity = part_size_for(
                self.settings.part_size,
                upload.as_ref().map_or(2, |u| u.next_number + 1),
            ) + spare;
            let part = std::mem::replace(&mut buffer, BytesMut::with_capacity(next_capacity)).freeze();
            if upload.is_none() {
                upload = Some(self.start_multipart(key).await?);
            }
            let u = upload.as_mut().expect("started above");
            if let Err(e) = u.send_part(part, self.settings.parts_in_flight).await {
                if let Some(upload) = upload.take() {
                    upload.abort().await;
                }
                return Err(e);
            }
        }
        match upload {
            None => {
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_type("application/gzip")
                    .content_length(total as i64)
                    .body(ByteStream::from(buffer.freeze()))
                    .send()
                    .await
                    .map_err(|e| s3_error(&format!("PutObject of {key}"), e))?;
            }
            Some(mut u) => {
                let result = async {
                    if !buffer.is_empty() {
                        u.send_part(buffer.freeze(), 1).await?;
                    }
                    u.complete().await
                }
                .await;
                if let Err(e) = result {
                    u.abort().await;
                    return Err(e);
                }
            }
        }
        let stored = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(&format!("HeadObject of {key}"), e))?
            .content_length()
            .unwrap_or(-1);
        if stored != total as i64 {
            let _ = self.delete(key).await;
            bail!(
                "the store holds {stored} bytes for {key} but {total} were streamed; the object was deleted"
            );
        }
        Ok(Stored {
            bytes: total,
            sha256: crate::hex::encode(&hasher.finalize()),
        })
    }

    async fn start_multipart(&self, key: &str) -> Result<Multipart> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/gzip")
            .send()
            .await
            .map_err(|e| s3_error(&format!("CreateMultipartUpload of {key}"), e))?;
        let upload_id = created
            .upload_id()
            .context("the store returned no upload id")?
            .to_owned();
        Ok(Multipart {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: Some(upload_id),
            next_number: 1,
            in_flight: VecDeque::new(),
            done: Vec::new(),
        })
    }

    pub async fn get(&self, key: &str) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(&format!("GetObject of {key}"), e))?;
        Ok(Box::new(object.body.into_async_read()))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error(&format!("ListObjectsV2 under {prefix}"), e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ObjectInfo {
                    key: key.to_owned(),
                    bytes: object.size().unwrap_or(0) as u64,
                    last_modified: object.last_modified().map(to_chrono).unwrap_or_else(Utc::now),
                });
            }
        }
        Ok(out)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error(&format!("DeleteObject of {key}"), e))?;
        Ok(())
    }

    /// Unfinished multipart uploads under `prefix`, every page of them. A store without
    /// `ListMultipartUploads` gets one warning and an empty list: the cleanup it serves is
    /// housekeeping, and a backup must not fail for it.
    pub async fn list_incomplete(&self, prefix: &str) -> Result<Vec<Incomplete>> {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let mut out = Vec::new();
        let (mut key_marker, mut upload_marker) = (None::<String>, None::<String>);
        loop {
            let listed = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(upload_marker.clone())
                .send()
                .await;
            let listed = match listed {
                Ok(listed) => listed,
                Err(e) if not_implemented(&e) => {
                    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(error = %s3_error("ListMultipartUploads", e),
                            "the backup store does not list unfinished uploads; cleaning up interrupted uploads is skipped (set a lifecycle rule that aborts incomplete multipart uploads)");
                    }
                    return Ok(Vec::new());
                }
                Err(e) => return Err(s3_error(&format!("ListMultipartUploads under {prefix}"), e)),
            };
            out.extend(listed.uploads().iter().filter_map(|u| {
                Some(Incomplete {
                    key: u.key()?.to_owned(),
                    handle: u.upload_id()?.to_owned(),
                    started: u.initiated().map(to_chrono),
                })
            }));
            if listed.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = listed.next_key_marker().map(str::to_owned);
            upload_marker = listed.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_marker.is_none() {
                return Ok(out);
            }
        }
    }

    pub async fn discard_incomplete(&self, incomplete: &Incomplete) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&incomplete.key)
            .upload_id(&incomplete.handle)
            .send()
            .await
            .map_err(|e| s3_error(&format!("AbortMultipartUpload of {}", incomplete.key), e))?;
        Ok(())
    }
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_else(Utc::now)
}

/// An open multipart upload. Dropped without `complete`, it aborts itself in the background,
/// so a cancelled backup leaves no unfinished upload behind.
struct Multipart {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
    next_number: i32,
    in_flight: VecDeque<JoinHandle<Result<CompletedPart>>>,
    done: Vec<CompletedPart>,
}

impl Multipart {
    /// Uploads `data` as the next part, first waiting for older parts while more than
    /// `max_in_flight - 1` are still going.
    async fn send_part(&mut self, data: Bytes, max_in_flight: usize) -> Result<()> {
        while self.in_flight.len() >= max_in_flight.max(1) {
            self.wait_oldest().await?;
        }
        let number = self.next_number;
        self.next_number += 1;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.as_deref().unwrap_or_default())
            .part_number(number)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data));
        let key = self.key.clone();
        self.in_flight.push_back(tokio::spawn(async move {
            let sent = request
                .send()
                .await
                .map_err(|e| s3_error(&format!("UploadPart {number} of {key}"), e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(sent.e_tag().map(str::to_owned))
                .build())
        }));
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<()> {
        if let Some(handle) = self.in_flight.pop_front() {
            let part = handle.await.context("a part upload task failed")??;
            self.done.push(part);
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.as_deref().unwrap_or_default())
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await;
        if let Err(e) = completed {
            // Some S3-compatible stores answer a successful completion with a body the SDK
            // can't parse (e.g. a `CompleteMultipartUploadResponse` root). A 2xx status means
            // the object was assembled; the caller's HEAD check verifies its size.
            let succeeded = e.raw_response().is_some_and(|r| r.status().is_success());
            if !succeeded {
                return Err(s3_error(&format!("CompleteMultipartUpload of {}", self.key), e));
            }
            tracing::debug!(key = %self.key, "completion answered 2xx with an unreadable body; verifying by HEAD");
        }
        self.upload_id = None;
        Ok(())
    }

    async fn abort(mut self) {
        for handle in self.in_flight.drain(..) {
            handle.abort();
        }
        if let Some(upload_id) = self.upload_id.take() {
            abort_upload(&self.client, &self.bucket, &self.key, &upload_id).await;
        }
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        for handle in self.in_flight.drain(..) {
            handle.abort();
        }
        if let Some(upload_id) = self.upload_id.take() {
            let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { abort_upload(&client, &bucket, &key, &upload_id).await });
            }
        }
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    if let Err(e) = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        tracing::warn!(key, error = %DisplayErrorContext(e), "could not abort an unfinished upload; the next backup or prune of this tenant retries");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_grow_so_ten_thousand_parts_exceed_five_tib() {
        let base = 8 * 1024 * 1024;
        assert_eq!(part_size_for(base, 1), base);
        assert_eq!(part_size_for(base, 1000), base);
        assert_eq!(part_size_for(base, 1001), 2 * base);
        let total: u128 = (1..=10_000).map(|n| part_size_for(base, n) as u128).sum();
        assert!(total > 5 * 1024u128.pow(4), "{total}");
        assert!(
            part_size_for(base, 10_000) <= 5 * 1024 * 1024 * 1024,
            "parts stay under S3's 5 GiB part limit"
        );
    }
}
