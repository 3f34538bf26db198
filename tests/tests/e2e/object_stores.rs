//! The object stores the storage roots can live in, against the real servers
//! `scripts/services.sh up` runs (docs/storage.md): SeaweedFS and moto for S3, Azurite for
//! Azure Blob, gcp-storage-emulator for GCS, each through object_store built from exactly
//! the options `testkit::objects` hands the pipeline's configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use shardflow_testkit::objects::{BUCKET, GCS_ENDPOINT, ObjectDir, ObjectServer, keys_under};

/// S3's smallest part but the last; Azure and GCS take it too.
const PART: usize = 5 * 1024 * 1024;

/// `n` bytes that differ from one position to the next, from `seed`.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn get(store: &dyn ObjectStore, path: &Path) -> object_store::Result<Vec<u8>> {
    Ok(store.get(path).await?.bytes().await?.to_vec())
}

/// Keys under the test's prefix through object_store's own listing, sorted.
async fn listed(dir: &ObjectDir) -> Vec<String> {
    dir.keys().await.unwrap_or_else(|e| panic!("listing {}: {e}", dir.url()))
}

fn not_found<T: std::fmt::Debug>(result: object_store::Result<T>, what: &str) {
    match result {
        Err(object_store::Error::NotFound { .. }) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

/// Put, get, head, overwrite, list (flat and by directory), a multipart upload that nobody
/// sees before it completes, delete: the same scenario for every store that lists.
async fn scenario(dir: &ObjectDir) {
    let store = dir.store();
    let (one, two) = (dir.path("a/one.bin"), dir.path("a/b/two.bin"));

    let first = bytes(1_000, 1);
    let put = store.put(&one, first.clone().into()).await.expect("put");
    assert!(put.e_tag.is_some(), "{:?}: no ETag for a put", dir.server());
    assert_eq!(get(store.as_ref(), &one).await.expect("get"), first);
    let meta = store.head(&one).await.expect("head");
    assert_eq!((meta.location.clone(), meta.size), (one.clone(), 1_000));

    // Overwriting the same key replaces the bytes and the size.
    let second = bytes(2_345, 7);
    store.put(&one, second.clone().into()).await.expect("overwrite");
    assert_eq!(get(store.as_ref(), &one).await.expect("get after overwrite"), second);
    assert_eq!(store.head(&one).await.expect("head after overwrite").size, 2_345);

    let range = store.get_range(&one, 10..20).await.expect("get_range");
    assert_eq!(range.as_ref(), &second[10..20]);

    store.put(&two, PutPayload::from_static(b"two")).await.expect("put two");
    assert_eq!(listed(dir).await, [two.to_string(), one.to_string()]);
    let by_dir = store.list_with_delimiter(Some(&dir.path("a"))).await.expect("list_with_delimiter");
    assert_eq!(by_dir.common_prefixes, [dir.path("a/b")]);
    assert_eq!(by_dir.objects.iter().map(|o| &o.location).collect::<Vec<_>>(), [&one]);

    // A multipart upload: its parts are stored, but the object exists for nobody until the
    // upload completes.
    let big = dir.path("big.bin");
    let parts = [bytes(PART, 3), bytes(PART, 4), bytes(1_234, 5)];
    let mut upload = store.put_multipart(&big).await.expect("put_multipart");
    for part in &parts {
        upload.put_part(part.clone().into()).await.expect("put_part");
    }
    not_found(store.head(&big).await, "head before the upload completes");
    assert!(!listed(dir).await.contains(&big.to_string()), "an unfinished upload is listed");
    upload.complete().await.expect("complete");
    let whole = parts.concat();
    assert_eq!(store.head(&big).await.expect("head after complete").size, whole.len() as u64);
    assert!(get(store.as_ref(), &big).await.expect("get after complete") == whole, "multipart bytes differ");
    assert_eq!(listed(dir).await, [two.to_string(), one.to_string(), big.to_string()]);

    // An aborted upload leaves nothing.
    let dropped = dir.path("aborted.bin");
    let mut upload = store.put_multipart(&dropped).await.expect("put_multipart");
    upload.put_part(bytes(PART, 9).into()).await.expect("put_part");
    upload.abort().await.expect("abort");
    not_found(store.head(&dropped).await, "head of an aborted upload");

    store.delete(&one).await.expect("delete");
    not_found(store.get(&one).await, "get after delete");
    not_found(store.head(&one).await, "head after delete");
    assert_eq!(listed(dir).await, [two.to_string(), big.to_string()]);
    not_found(get(store.as_ref(), &dir.path("never.bin")).await, "get of a key never put");
}

#[tokio::test]
async fn seaweedfs() {
    scenario(&ObjectDir::s3_seaweed("seaweedfs")).await;
}

#[tokio::test]
async fn moto() {
    scenario(&ObjectDir::s3_moto("moto")).await;
}

#[tokio::test]
async fn azurite() {
    scenario(&ObjectDir::azurite("azurite")).await;
}

/// A store for the bucket with one option replaced.
fn store_with(dir: &ObjectDir, key: &str, value: &str) -> Arc<dyn ObjectStore> {
    let mut options = dir.options();
    assert!(options.insert(key.into(), value.into()).is_some(), "{key} is not among {:?}'s options", dir.server());
    dir.server().build(&dir.server().bucket_url(), &options).expect("store with a changed option")
}

/// The servers check signatures: a wrong secret writes nothing and reads nothing.
async fn wrong_secret_refused(dir: &ObjectDir, key: &str, wrong: &str, refusal: &str) {
    let path = dir.path("signed.bin");
    dir.store().put(&path, PutPayload::from_static(b"kept")).await.expect("put with the right key");
    let impostor = store_with(dir, key, wrong);
    let refused = impostor.put(&path, PutPayload::from_static(b"forged")).await.expect_err("put with a wrong secret");
    let message = refused.to_string();
    assert!(message.contains(refusal), "{:?}: refusal without {refusal}: {message}", dir.server());
    let read = get(impostor.as_ref(), &path).await.expect_err("get with a wrong secret").to_string();
    assert!(read.contains("403") || read.contains(refusal), "{:?}: get refused how? {read}", dir.server());
    assert_eq!(get(dir.store().as_ref(), &path).await.expect("get with the right key"), b"kept");
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    wrong_secret_refused(
        &ObjectDir::s3_moto("signed"),
        "aws_secret_access_key",
        "not-the-secret",
        "SignatureDoesNotMatch",
    )
    .await;
    wrong_secret_refused(
        &ObjectDir::s3_seaweed("signed"),
        "aws_secret_access_key",
        "not-the-secret",
        "SignatureDoesNotMatch",
    )
    .await;
    // A well-formed key (base64) that is not the account's.
    let forged = "Zm9yZ2VkLWtleS1mb3ItYXp1cml0ZS10ZXN0cy1vbmx5LW5vdC10aGUtYWNjb3VudC1rZXk=";
    wrong_secret_refused(&ObjectDir::azurite("signed"), "azure_storage_account_key", forged, "AuthorizationFailure")
        .await;
}

#[tokio::test]
async fn an_unknown_option_is_an_error_not_ignored() {
    let dir = ObjectDir::s3_seaweed("options");
    let mut options = dir.options();
    options.insert("aws_endpoitn".into(), "http://127.0.0.1:1".into());
    let refused = dir.server().build("s3://shardflow", &options).map(|_| ()).expect_err("a misspelt key");
    assert!(refused.to_string().contains("aws_endpoitn"), "{refused}");
}

#[tokio::test]
async fn the_toml_table_holds_the_options() {
    for dir in [ObjectDir::s3_moto("toml"), ObjectDir::azurite("toml"), ObjectDir::gcs("toml")] {
        let parsed: toml::Table = dir.toml().parse().expect("TOML");
        let table = &parsed["storage"][dir.server().table()];
        let options: BTreeMap<String, String> = table.clone().try_into().expect("a table of strings");
        assert_eq!(options, dir.options(), "{}", dir.toml());
    }
}

#[tokio::test]
async fn dropping_the_dir_deletes_its_objects() {
    for server in [ObjectServer::SeaweedFs, ObjectServer::Moto, ObjectServer::Azurite, ObjectServer::GcsEmulator] {
        let dir = ObjectDir::new(server, "dropped");
        let (store, prefix) = (dir.store(), dir.prefix().clone());
        for name in ["x.bin", "d/y.bin", "d/e/z.bin"] {
            let put = store.put(&dir.path(name), PutPayload::from_static(b"gone soon")).await;
            // The GCS emulator stores the bytes but answers without the ETag object_store needs.
            if server != ObjectServer::GcsEmulator {
                put.expect("put");
            }
        }
        assert_eq!(dir.keys().await.expect("keys").len(), 3, "{server:?}");
        drop(dir);
        let left = keys_under(server, &prefix).await.expect("keys after drop");
        assert!(left.is_empty(), "{server:?}: left after drop: {left:?}");
    }
}

/// An object's bytes from the GCS emulator's JSON API (`alt=media`).
async fn gcs_media(path: &Path) -> Vec<u8> {
    let mut url = reqwest::Url::parse(&format!("{GCS_ENDPOINT}/storage/v1/b/{BUCKET}/o/")).expect("URL");
    url.path_segments_mut().expect("a base URL").pop_if_empty().push(path.as_ref());
    let response = reqwest::Client::new().get(url).query(&[("alt", "media")]).send().await.expect("JSON API");
    assert_eq!(response.status(), 200, "{path} through the JSON API");
    response.bytes().await.expect("body").to_vec()
}

/// `result` failed with an error whose text has `expected`.
fn fails_with<T: std::fmt::Debug>(result: object_store::Result<T>, what: &str, expected: &str) {
    match result {
        Err(e) => {
            eprintln!("{what}: {e}");
            assert!(e.to_string().contains(expected), "{what}: expected an error with {expected:?}, got {e}");
        }
        Ok(v) => panic!("{what}: expected an error with {expected:?}, got {v:?}"),
    }
}

/// What the GCS emulator answers through object_store's GCS client. The client speaks GCS's
/// XML API; the emulator implements the JSON API and, of the XML API, only PUT and GET of an
/// object, without the ETag and Last-Modified headers object_store requires. So every call
/// fails, yet a put's bytes land (docs/storage.md lists the errors).
#[tokio::test]
async fn gcs_emulator_through_object_store() {
    let dir = ObjectDir::gcs("gcs");
    let store = dir.store();
    let one = dir.path("a/one.bin");
    let body = bytes(1_000, 1);
    fails_with(store.put(&one, body.clone().into()).await, "put", "ETag");
    assert_eq!(gcs_media(&one).await, body, "the bytes of the failed put");
    assert_eq!(dir.keys().await.expect("keys through the JSON API"), [one.to_string()]);
    fails_with(store.get(&one).await.map(|_| ()), "get", "Last-Modified");
    fails_with(store.head(&one).await, "head", "501");
    fails_with(store.list(Some(dir.prefix())).try_collect::<Vec<_>>().await, "list", "501");
    fails_with(store.list_with_delimiter(Some(dir.prefix())).await, "list_with_delimiter", "501");
    fails_with(store.put_multipart(&dir.path("big.bin")).await.map(|_| ()), "put_multipart", "501");
    fails_with(store.delete(&one).await, "delete", "501");
    assert_eq!(gcs_media(&one).await, body, "still there after the failed delete");
}

/// Rows and the sum of `amount` that pyarrow's S3 filesystem reads from `key` in SeaweedFS.
fn pyarrow_reads(dir: &ObjectDir, key: &str) -> (i64, i64) {
    let options = dir.options();
    let script = "import sys, json, pyarrow.fs as fs, pyarrow.parquet as pq\n\
                  key, secret, endpoint, region, path = sys.argv[1:]\n\
                  s3 = fs.S3FileSystem(access_key=key, secret_key=secret, region=region,\n\
                                       endpoint_override=endpoint, scheme='http')\n\
                  t = pq.read_table(path, filesystem=s3)\n\
                  print(json.dumps([t.num_rows, sum(t.column('amount').to_pylist())]))\n";
    let endpoint = options["aws_endpoint"].trim_start_matches("http://");
    let out = std::process::Command::new(shardflow_testkit::python())
        .args(["-c", script])
        .args([&options["aws_access_key_id"], &options["aws_secret_access_key"], endpoint, &options["aws_region"]])
        .arg(format!("{BUCKET}/{key}"))
        .output()
        .expect("python");
    assert!(out.status.success(), "pyarrow could not read {key}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

#[tokio::test]
async fn pyarrow_reads_parquet_written_to_seaweedfs() {
    let dir = ObjectDir::s3_seaweed("pyarrow");
    let rows = 10_000_i64;
    let amount = Int64Array::from_iter_values((0..rows).map(|i| i * 3 - 7));
    let name = StringArray::from_iter_values((0..rows).map(|i| format!("row-{i}")));
    let batch = RecordBatch::try_from_iter([("amount", Arc::new(amount) as _), ("name", Arc::new(name) as _)])
        .expect("a batch");
    let mut buffer = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut buffer, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let path = dir.path("out/part-0.parquet");
    dir.store().put(&path, buffer.into()).await.expect("put the Parquet file");
    let expected: i64 = (0..rows).map(|i| i * 3 - 7).sum();
    assert_eq!(pyarrow_reads(&dir, path.as_ref()), (rows, expected));
}
