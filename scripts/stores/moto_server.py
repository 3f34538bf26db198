"""moto's S3 server with one IAM user whose fixed access key is the only way in.

usage: moto_server.py PORT ACCESS_KEY_ID SECRET_ACCESS_KEY BUCKET

moto checks signatures only against the access keys of its own IAM users, and the keys it
creates are random; this launcher creates the user `shardflow` (allowed s3:*) in the default
account with the given key before the server starts, so the tests know the key and moto
refuses every request not signed with it (INITIAL_NO_AUTH_ACTION_COUNT=0: no free requests).
State is in memory: a restart starts empty, with the user and the bucket made again.
"""

import json
import os
import sys

os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # read when moto.settings is imported

from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.iam.models import iam_backends  # noqa: E402
from moto.s3.models import s3_backends  # noqa: E402
from moto.server import main  # noqa: E402


def provision(access_key_id: str, secret: str, bucket: str) -> None:
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user("us-east-1", "shardflow")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy("shardflow", "s3", json.dumps(policy))
    key = iam.create_access_key("shardflow")
    # The backend indexes keys by id: re-file the key under the fixed id.
    del iam.access_keys[key.physical_resource_id]
    key.access_key_id, key.secret_access_key = access_key_id, secret
    iam.access_keys[key.physical_resource_id] = key
    s3_backends[DEFAULT_ACCOUNT_ID]["aws"].create_bucket(bucket, "us-east-1")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    port, access_key_id, secret, bucket = sys.argv[1:]
    provision(access_key_id, secret, bucket)
    main(["--host", "127.0.0.1", "--port", port])
