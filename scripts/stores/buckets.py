"""Create the bucket (or container) `NAME` in each object store the tests use, if missing.

usage: buckets.py NAME

Endpoints and credentials come from the environment scripts/services.sh sets
(SEAWEEDFS_S3, MOTO_S3, S3_REGION, SEAWEEDFS_KEY/SECRET, MOTO_KEY/SECRET, AZURITE_BLOB,
GCS_EMULATOR). Every request is signed where the server checks signatures.
"""

import json
import os
import sys
import urllib.error
import urllib.request

import boto3
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from botocore.config import Config

# Azurite's well-known development account (documented by Microsoft; the same in object_store).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# The Blob API version object_store 0.12 speaks; the SDK's newer default is one Azurite refuses.
AZURE_API_VERSION = "2023-11-03"


def s3_bucket(endpoint: str, key: str, secret: str, name: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=os.environ["S3_REGION"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    try:
        s3.create_bucket(Bucket=name)
    except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        pass


def azure_container(endpoint: str, name: str) -> None:
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )
    try:
        BlobServiceClient.from_connection_string(connection, api_version=AZURE_API_VERSION).create_container(name)
    except ResourceExistsError:
        pass


def gcs_bucket(endpoint: str, name: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=shardflow",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # 409: the bucket exists
            raise


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    name = sys.argv[1]
    env = os.environ
    s3_bucket(env["SEAWEEDFS_S3"], env["SEAWEEDFS_KEY"], env["SEAWEEDFS_SECRET"], name)
    s3_bucket(env["MOTO_S3"], env["MOTO_KEY"], env["MOTO_SECRET"], name)
    azure_container(env["AZURITE_BLOB"], name)
    gcs_bucket(env["GCS_EMULATOR"], name)
