"""The official REST client (PyPI gitpod-sdk 0.11.0) against prebuildd.

Usage: python rest_client.py BASE_URL API_KEY PROJECT_ID ENVIRONMENT_CLASS_ID

JSON on the documented `/api/` paths, with strict response validation:
all eleven methods, typed errors, and auto-paging over several pages (the
client sends the next page's token in the URL query). Prints
`N passed, 0 failed`; exits non-zero on the first failure.
"""

import sys

import gitpod
from gitpod import Gitpod

base_url, api_key, project_id, class_id = sys.argv[1:5]
client = Gitpod(bearer_token=api_key, base_url=base_url + "/api", _strict_response_validation=True)
passed = 0


def check(condition, what):
    global passed
    if not condition:
        print(f"FAILED: {what}")
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1


created = client.prebuilds.create(project_id=project_id, spec={"timeout": "1800s"}).prebuild
check(created.metadata.project_id == project_id, "create: project")
check(created.spec.timeout == "1800s", "create: timeout")
check(created.status.phase == "PREBUILD_PHASE_PENDING" or created.status.phase is not None, "create: phase")
check(created.metadata.created_at is not None and created.metadata.created_at.tzinfo is not None, "create: timestamps parse")

got = client.prebuilds.retrieve(prebuild_id=created.id).prebuild
check(got.id == created.id, "retrieve")

token = client.prebuilds.create_logs_token(prebuild_id=created.id).access_token
check(bool(token), "create_logs_token")

cancelled = client.prebuilds.cancel(prebuild_id=created.id).prebuild
check(cancelled.spec.desired_phase == "PREBUILD_PHASE_CANCELLED", "cancel")

client.prebuilds.delete(prebuild_id=created.id)
passed += 1

# Auto-paging: 7 more prebuilds, pages of 3, every one exactly once.
ids = [client.prebuilds.create(project_id=project_id, spec={}).prebuild.id for _ in range(7)]
seen = []
for prebuild in client.prebuilds.list(page_size=3, filter={"project_ids": [project_id]}):
    seen.append(prebuild.id)
    if len(seen) > 100:
        break
check(len(seen) == len(set(seen)), f"auto-paging returns no prebuild twice ({len(seen)} items)")
check(set(ids) <= set(seen), "auto-paging reaches every page")
first_page = client.prebuilds.list(page_size=3, filter={"project_ids": [project_id]})
check(len(first_page.prebuilds) == 3 and first_page.pagination.next_token, "a first page of 3 with a next token")

pool = client.prebuilds.create_warm_pool(project_id=project_id, environment_class_id=class_id, desired_size=2).warm_pool
check(pool.spec.min_size == 2 and pool.spec.max_size == 2 and pool.spec.desired_size == 2, "create_warm_pool with desired_size")
check(client.prebuilds.retrieve_warm_pool(warm_pool_id=pool.id).warm_pool.id == pool.id, "retrieve_warm_pool")
pools = list(client.prebuilds.list_warm_pools(filter={"project_ids": [project_id]}))
check(pool.id in [p.id for p in pools], "list_warm_pools")
updated = client.prebuilds.update_warm_pool(warm_pool_id=pool.id, desired_size=5).warm_pool
check(updated.spec.max_size == 5, "update_warm_pool")
client.prebuilds.delete_warm_pool(warm_pool_id=pool.id)
passed += 1

try:
    client.prebuilds.retrieve(prebuild_id="07e03a28-65a5-4d98-b532-8ea67b188048")
    check(False, "retrieve of an unknown prebuild must fail")
except gitpod.NotFoundError as error:
    check(error.status_code == 404, "NotFoundError")
try:
    client.prebuilds.retrieve(prebuild_id="nope")
    check(False, "retrieve of a bad ID must fail")
except gitpod.BadRequestError as error:
    check("prebuild_id" in str(error), f"BadRequestError names the field: {error}")
try:
    Gitpod(bearer_token="wrong", base_url=base_url + "/api").prebuilds.list().prebuilds
    check(False, "a wrong key must fail")
except gitpod.AuthenticationError:
    passed += 1

print(f"{passed} passed, 0 failed")
