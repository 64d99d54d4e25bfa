"""Benchmark: buckets on S3 (moto over HTTP) and secrets in the postgres store, against raw baselines.

Measured in one run:

- buckets, cold apply: kliv plan + apply of N new buckets in an existing project (every setting:
  public read, versioning, CORS, lifecycle, tags), versus the baseline: boto3 making
  exactly those calls for N other buckets in a loop (what any tool must at least do);
- buckets, no-change re-plan: kliv observing all N, versus boto3 reading the same
  configuration (head + 6 reads per bucket);
- secrets, cold apply: kliv plan + apply of N new ProjectSecrets (postgres store), versus
  the baseline: sealing N values with AES-256-GCM under per-value wrapped keys and
  storing each durably (one INSERT and commit each) on one connection;
- secrets, no-change re-plan.

    KLIV_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/storage.py --buckets 50 --secrets 200 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from aws_services import client, moto_server, reset

from keyrings import TEST_KEY
from kliv.specs import load
from kliv.stacks import PostgresEngine
from kliv.stacks.providers import ProviderOptions
from kliv.stacks.secrets import keys

# The control database's secrets are keyed by one KLIV_SECRET_KEY: use the installation's
# (the tests' key by default, so the benchmark runs on the test servers).
KEY = os.environ.get("KLIV_SECRET_KEY", TEST_KEY)


def _apply(engine: PostgresEngine, group: Any) -> None:
    prepared = engine.plan(group)
    assert not prepared.problems, prepared.problems
    assert not prepared.plan.empty
    engine.apply(prepared)


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _project(folder: Path, database: str, buckets: int, secrets: int) -> Any:
    documents: list[dict[str, Any]] = [
        {"apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Project", "metadata": {"name": "bench"},
         "spec": {"database": {"name": database}}},
    ]  # fmt: skip
    for i in range(buckets):
        documents.append({
            "apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "Bucket", "metadata": {"name": f"b{i:04d}"},
            "spec": {"projectRef": {"name": "bench"}, "name": f"{database.replace('_', '-')}-b{i:04d}",
                     "public": True, "versioning": True, "maxObjectSize": "5Mi",
                     "allowedContentTypes": ["image/png"], "lifecycle": [{"prefix": "tmp/", "expireAfterDays": 7}],
                     "cors": [{"allowedOrigins": ["https://x.example"], "allowedMethods": ["GET", "PUT"]}]},
        })  # fmt: skip
    for i in range(secrets):
        documents.append({
            "apiVersion": "cloud.kliv.dev/v1alpha1", "kind": "ProjectSecret", "metadata": {"name": f"s{i:04d}"},
            "spec": {"projectRef": {"name": "bench"}, "valueFrom": {"env": f"BENCH_{i:04d}"}},
        })  # fmt: skip
    (folder / "specs.yaml").write_text(yaml.safe_dump_all(documents))
    validation = load([folder])
    assert validation.valid, validation.errors[:3]
    [group] = [g for g in validation.specs.projects.values() if g.project]
    return group


def _boto_buckets(s3: Any, names: list[str]) -> None:
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                      "Resource": ""}]}  # fmt: skip
    for name in names:
        s3.create_bucket(Bucket=name)
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": ["https://x.example"], "AllowedMethods": ["GET", "PUT"]}]})  # fmt: skip
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [
            {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 7}}]})  # fmt: skip
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False,
            "RestrictPublicBuckets": False})  # fmt: skip
        policy["Statement"][0]["Resource"] = f"arn:aws:s3:::{name}/*"  # type: ignore[index]
        s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": "kliv:project", "Value": "bench"}]})


def _boto_reads(s3: Any, names: list[str]) -> None:
    for name in names:
        s3.head_bucket(Bucket=name)
        s3.get_bucket_tagging(Bucket=name)
        s3.get_bucket_versioning(Bucket=name)
        s3.get_bucket_cors(Bucket=name)
        s3.get_bucket_lifecycle_configuration(Bucket=name)
        s3.get_public_access_block(Bucket=name)
        s3.get_bucket_policy(Bucket=name)


def _raw_secrets(url: str, count: int) -> None:
    ring = keys.Keyring(KEY)
    with psycopg.connect(make_conninfo(url, dbname="kliv"), autocommit=True) as connection:
        connection.execute("CREATE TEMP TABLE bench (name text, key_id text, wrapped bytea, ciphertext bytea)")
        for i in range(count):
            data_key = keys.new_data_key()
            key_id, wrapped = ring.wrap(data_key, f"bench/{i}".encode())
            sealed = keys.seal(data_key, f"value-{i}".encode(), f"bench/{i}".encode())
            connection.execute("INSERT INTO bench VALUES (%s, %s, %s, %s)", [f"S{i}", key_id, wrapped, sealed])


def _one_run(url: str, s3_url: str, buckets: int, secrets: int, found: dict[str, list[float]]) -> None:
    from kliv.stacks.secrets.provider import environment_values

    s3 = client(s3_url, "s3")
    database = f"bench_{uuid.uuid4().hex[:8]}"
    names = [f"raw-{database.replace('_', '-')}-{i:04d}" for i in range(buckets)]

    def record(name: str, action: Callable[[], Any]) -> None:
        found.setdefault(name, []).append(_timed(action))

    with tempfile.TemporaryDirectory() as folder:
        options = ProviderOptions(
            Path(folder), environment_values(dict(os.environ)), s3_endpoint=s3_url, secret_key=KEY
        )
        engine = PostgresEngine(url, options=options)
        # Untimed: the project's database exists first, as it does when storage is added to an app.
        engine.apply(engine.plan(_project(Path(folder), database, 0, 0)))
        with_buckets = _project(Path(folder), database, buckets, 0)
        record("buckets: kliv cold apply", lambda: _apply(engine, with_buckets))
        record("buckets: boto3 calls alone", lambda: _boto_buckets(s3, names))
        record("buckets: kliv no-change re-plan", lambda: engine.plan(with_buckets))
        record("buckets: boto3 reads alone", lambda: _boto_reads(s3, names))
        engine.drop_project(database)
        reset(s3_url)
        engine.apply(engine.plan(_project(Path(folder), database, 0, 0)))
        with_secrets = _project(Path(folder), database, 0, secrets)
        record("secrets: kliv cold apply", lambda: _apply(engine, with_secrets))
        record("secrets: seal + insert alone", lambda: _raw_secrets(url, secrets))
        record("secrets: kliv no-change re-plan", lambda: engine.plan(with_secrets))
        engine.drop_project(database)
        engine.close()


RATIOS = (
    ("buckets: kliv cold apply", "buckets: boto3 calls alone"),
    ("buckets: kliv no-change re-plan", "buckets: boto3 reads alone"),
    ("secrets: kliv cold apply", "secrets: seal + insert alone"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buckets", type=int, default=50)
    parser.add_argument("--secrets", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    url = os.environ.get("KLIV_DATABASE_URL")
    if not url:
        sys.exit("set KLIV_DATABASE_URL to a Postgres server")
    for i in range(arguments.secrets):
        os.environ[f"BENCH_{i:04d}"] = f"value-{i}"
    found: dict[str, list[float]] = {}
    with moto_server() as s3_url:
        for _ in range(arguments.runs):
            _one_run(url, s3_url, arguments.buckets, arguments.secrets, found)
    medians = {name: statistics.median(times) for name, times in found.items()}
    print(
        f"| measure ({arguments.buckets} buckets, {arguments.secrets} secrets, median of {arguments.runs}) | seconds |"
    )
    print("|---|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} |")
    for kliv, base in RATIOS:
        what, kliv_name = kliv.split(": ")
        print(f"| {what}: ratio {kliv_name} / {base.split(': ')[1]} | {medians[kliv] / medians[base]:.2f}x |")


if __name__ == "__main__":
    main()
