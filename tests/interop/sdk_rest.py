"""The official REST client (PyPI gitpod-sdk 0.11.0) against a live prebuildd.

Run with the Python that has gitpod-sdk==0.11.0 (.tools/sdk-0.11/bin/python);
the arguments are described in harness.py. The client is constructed as its
documentation shows, with the base URL pointed at prebuildd's `/api` (the
hosted default is https://app.gitpod.io/api) and strict response validation,
so that every response must match the client's pydantic models exactly:

    Gitpod(bearer_token=..., base_url="<root>/api", _strict_response_validation=True)

It POSTs JSON to `<base_url>/gitpod.v1.PrebuildService/<Method>`; its list
methods send `pageSize` and the next page's `token` in the URL query.

Sections:
  prebuilds    create, retrieve, list (filters), create_logs_token, cancel,
               delete
  warm_pools   create_warm_pool (min/max and deprecated desired_size),
               retrieve_warm_pool, list_warm_pools, update_warm_pool,
               delete_warm_pool
  paging       auto-paging over several pages (page size in the query, and
               in the body), page by page, and warm pools one per page
  errors       typed exceptions: NotFoundError, BadRequestError,
               AuthenticationError, ConflictError, with the Connect code
  empty_lists  list and list_warm_pools with no match, under strict
               validation
  lifecycle    (only when selected; needs a running reconciler, --project-id
               completing and --second-project-id failing) the objects in
               their later phases pass strict validation: COMPLETED, FAILED,
               a READY warm pool with its snapshot; the logs token reads the
               prebuild's log
"""

import datetime
import time

import gitpod
import httpx
from gitpod import Gitpod

from harness import UNKNOWN_ID, UUID_V7, Checks, parse_args

SECTIONS = {}


def section(function):
    SECTIONS[function.__name__] = function
    return function


args = parse_args(__doc__, ["prebuilds", "warm_pools", "paging", "errors", "empty_lists", "lifecycle"], only_if_selected=["lifecycle"])
checks = Checks()
check, equal = checks.check, checks.equal

requests = []  # (method, URL, body) of every request the client sends
client = Gitpod(
    bearer_token=args.api_key,
    base_url=args.base_url + "/api",
    _strict_response_validation=True,
    timeout=30,
    http_client=gitpod.DefaultHttpxClient(event_hooks={"request": [lambda r: requests.append((r.method, r.url, r.content))]}),
)
prebuilds_api = client.prebuilds


@section
def prebuilds():
    created = prebuilds_api.create(project_id=args.project_id, spec={"timeout": "1200s"}).prebuild
    method, url, body = requests[-1]
    equal((method, url.path), ("POST", "/api/gitpod.v1.PrebuildService/CreatePrebuild"), "create: the documented path")
    check(b'"projectId"' in body, "create: camelCase JSON sent", body)
    check(UUID_V7.match(created.id or ""), "create: the ID is a lowercase version 7 UUID", created.id)
    meta = created.metadata
    equal((meta.organization_id, meta.project_id, meta.environment_class_id), (args.org_id, args.project_id, args.class_id), "create: metadata")
    equal((meta.creator.id, meta.creator.principal), (args.subject_id, "PRINCIPAL_USER"), "create: creator")
    equal(meta.triggered_by, "PREBUILD_TRIGGER_MANUAL", "create: triggered by")
    check(isinstance(meta.created_at, datetime.datetime) and meta.created_at.utcoffset() == datetime.timedelta(0), "create: created_at is a UTC datetime", meta.created_at)
    equal(meta.updated_at, meta.created_at, "create: updated_at == created_at")
    equal(created.spec.timeout, "1200s", "create: spec.timeout")
    equal(created.spec.desired_phase, "PREBUILD_PHASE_COMPLETED", "create: desired phase")
    equal(created.spec.spec_version, "1", "create: spec version (a uint64 as a string)")
    equal(created.status.phase, "PREBUILD_PHASE_PENDING", "create: phase")
    equal(created.status.status_version, "1", "create: status version")
    check((created.status.log_url or "").endswith("/logs/prebuilds/" + created.id), "create: log URL", created.status.log_url)

    equal(prebuilds_api.retrieve(prebuild_id=created.id).prebuild, created, "retrieve: the same prebuild")
    other = prebuilds_api.create(project_id=args.second_project_id, spec={}).prebuild
    equal(other.spec.timeout, "1800s", "create: the project's timeout is the default")
    ids = [p.id for p in prebuilds_api.list(filter={"project_ids": [args.project_id]})]
    check(created.id in ids and other.id not in ids, "list: the project filter finds it, and only the project's", ids)
    ids = [p.id for p in prebuilds_api.list(filter={"project_ids": [args.project_id], "phases": ["PREBUILD_PHASE_PENDING"]})]
    check(created.id in ids, "list: a phase filter by enum name", ids)
    ids = [p.id for p in prebuilds_api.list(filter={"creator_ids": [args.subject_id], "triggered_by": ["PREBUILD_TRIGGER_MANUAL"]})]
    equal(ids[:2], [other.id, created.id], "list: creator and trigger filters, newest first")

    token = prebuilds_api.create_logs_token(prebuild_id=created.id).access_token
    check(len(token) >= 20, "create_logs_token: an access token", token)

    cancelled = prebuilds_api.cancel(prebuild_id=created.id).prebuild
    equal(cancelled.spec.desired_phase, "PREBUILD_PHASE_CANCELLED", "cancel: desired phase")
    equal(cancelled.status.phase, "PREBUILD_PHASE_CANCELLED", "cancel: a pending prebuild is cancelled at once")
    check(isinstance(cancelled.status.completion_time, datetime.datetime), "cancel: completion time", cancelled.status.completion_time)
    equal((cancelled.spec.spec_version, cancelled.status.status_version), ("2", "2"), "cancel: both versions grew")

    equal(prebuilds_api.delete(prebuild_id=created.id), {}, "delete: an empty object")
    gone = prebuilds_api.retrieve(prebuild_id=created.id).prebuild
    equal((gone.spec.desired_phase, gone.status.phase), ("PREBUILD_PHASE_DELETED", "PREBUILD_PHASE_DELETING"), "delete: DELETING, desired DELETED")
    equal(prebuilds_api.delete(prebuild_id=created.id), {}, "delete: again, harmless")


POOLS = {}  # (project, class) -> the warm pool this run created there


def pool_for(project_id, class_id, **sizes):
    if (project_id, class_id) not in POOLS:
        POOLS[project_id, class_id] = prebuilds_api.create_warm_pool(project_id=project_id, environment_class_id=class_id, **sizes).warm_pool
    return POOLS[project_id, class_id]


@section
def warm_pools():
    created = pool_for(args.project_id, args.second_class_id, min_size=0, max_size=3)
    check(UUID_V7.match(created.id or ""), "create_warm_pool: the ID is a lowercase version 7 UUID", created.id)
    equal((created.spec.min_size, created.spec.max_size, created.spec.desired_size), (0, 3, None), "create_warm_pool: min 0 (sent, as it has presence), max 3")
    equal((created.spec.desired_phase, created.spec.spec_version, created.spec.snapshot_id), ("WARM_POOL_PHASE_READY", "1", None), "create_warm_pool: spec")
    equal(created.status.phase, "WARM_POOL_PHASE_PENDING", "create_warm_pool: phase")
    meta = created.metadata
    equal(
        (meta.organization_id, meta.project_id, meta.environment_class_id, meta.runner_id),
        (args.org_id, args.project_id, args.second_class_id, args.runner_id),
        "create_warm_pool: metadata",
    )
    check(isinstance(meta.created_at, datetime.datetime), "create_warm_pool: created_at parses")

    equal(prebuilds_api.retrieve_warm_pool(warm_pool_id=created.id).warm_pool, created, "retrieve_warm_pool: the same pool")
    listed = list(prebuilds_api.list_warm_pools(filter={"project_ids": [args.project_id], "environment_class_ids": [args.second_class_id]}))
    equal([p.id for p in listed], [created.id], "list_warm_pools: the filters find exactly it")

    updated = prebuilds_api.update_warm_pool(warm_pool_id=created.id, max_size=5).warm_pool
    equal((updated.spec.min_size, updated.spec.max_size, updated.spec.spec_version), (0, 5, "2"), "update_warm_pool: max size 5, min kept, version grew")
    updated = prebuilds_api.update_warm_pool(warm_pool_id=created.id, min_size=2).warm_pool
    equal((updated.spec.min_size, updated.spec.max_size, updated.spec.spec_version), (2, 5, "3"), "update_warm_pool: min size 2, max kept")

    equal(prebuilds_api.delete_warm_pool(warm_pool_id=created.id), {}, "delete_warm_pool: an empty object")
    gone = prebuilds_api.retrieve_warm_pool(warm_pool_id=created.id).warm_pool
    equal((gone.spec.desired_phase, gone.status.phase), ("WARM_POOL_PHASE_DELETED", "WARM_POOL_PHASE_DELETING"), "delete_warm_pool: DELETING")

    legacy = pool_for(args.second_project_id, args.class_id, desired_size=2)
    equal((legacy.spec.desired_size, legacy.spec.min_size, legacy.spec.max_size), (2, 2, 2), "create_warm_pool: deprecated desired_size sets min and max")
    legacy = prebuilds_api.update_warm_pool(warm_pool_id=legacy.id, desired_size=4).warm_pool
    equal((legacy.spec.min_size, legacy.spec.max_size), (4, 4), "update_warm_pool: deprecated desired_size")


@section
def paging():
    by_project = {"project_ids": [args.second_project_id]}
    ids = [prebuilds_api.create(project_id=args.second_project_id, spec={}).prebuild.id for _ in range(7)]
    # (Listed after creating: an empty list trips over the empty_lists bug.)
    expected = prebuilds_api.list(filter=by_project, page_size=100).prebuilds
    expected = [p.id for p in expected]
    equal(expected[:7], ids[::-1], "list: one page of up to 100, newest first")

    # page_size in the query (pageSize=3), the next token in the query too.
    del requests[:]
    seen = []
    for prebuild in prebuilds_api.list(page_size=3, filter=by_project):
        seen.append(prebuild.id)
        if len(seen) > 100:
            break
    equal(seen, expected, "auto-paging (query pageSize): every prebuild exactly once, newest first, and it ends")
    queries = [dict(url.params) for _, url, _ in requests]
    pages = -(-len(expected) // 3)
    equal(len(queries), pages, "auto-paging (query pageSize): one request per page")
    check(all(q.get("pageSize") == "3" for q in queries), "auto-paging: pageSize=3 in every URL", queries)
    check("token" not in queries[0] and all(q.get("token") for q in queries[1:]), "auto-paging: the next token in the URL from page 2", queries)

    # page_size in the body's pagination: the body stays as it was; only the URL carries the token.
    del requests[:]
    seen = [p.id for p in prebuilds_api.list(pagination={"page_size": 3}, filter=by_project)]
    equal(seen, expected, "auto-paging (body pagination.pageSize): every prebuild exactly once")
    check(len(requests) == pages and all(b'"pageSize":3' in body for _, _, body in requests), "auto-paging (body): pageSize in every body", requests)

    page = prebuilds_api.list(page_size=3, filter=by_project)
    sizes = [len(page.prebuilds)]
    while page.has_next_page():
        page = page.get_next_page()
        sizes.append(len(page.prebuilds))
        if len(sizes) > 50:
            break
    check(all(s == 3 for s in sizes[:-1]) and 1 <= sizes[-1] <= 3 and len(sizes) == pages, "page by page: full pages, then the rest", sizes)
    equal(page.pagination.next_token if page.pagination else None, None, "page by page: the last page has no next token")

    pools = [pool_for(args.project_id, args.class_id), pool_for(args.project_id, args.second_class_id), pool_for(args.second_project_id, args.class_id)]
    del requests[:]
    listed = [p.id for p in prebuilds_api.list_warm_pools(page_size=1)]
    equal(sorted(listed), sorted(p.id for p in pools), "list_warm_pools auto-paging: each pool exactly once")
    equal(len(requests), 3, "list_warm_pools auto-paging: one pool per page, three pages")


def expect_error(call, error_type, status, code, needle, what):
    try:
        response = call()
        check(False, f"{what}: fails", f"succeeded with {response}")
    except gitpod.APIStatusError as error:
        check(type(error) is error_type, f"{what}: raises {error_type.__name__}", type(error).__name__)
        equal((error.status_code, error.code), (status, code), f"{what}: HTTP status and Connect code")
        message = error.body.get("message", "") if isinstance(error.body, dict) else ""
        check(needle in message, f"{what}: the message mentions {needle!r}", error.body)


@section
def errors():
    expect_error(lambda: prebuilds_api.retrieve(prebuild_id=UNKNOWN_ID), gitpod.NotFoundError, 404, "not_found", UNKNOWN_ID, "retrieve of an unknown ID")
    expect_error(lambda: prebuilds_api.retrieve(prebuild_id="not-a-uuid"), gitpod.BadRequestError, 400, "invalid_argument", "prebuild_id", "retrieve of a bad UUID")
    expect_error(
        lambda: prebuilds_api.create(project_id=args.project_id, spec={"timeout": "60s"}),
        gitpod.BadRequestError,
        400,
        "invalid_argument",
        "spec.timeout",
        "create with a 60s timeout",
    )
    expect_error(
        lambda: prebuilds_api.create(project_id=args.disabled_project_id, spec={}),
        gitpod.BadRequestError,
        400,
        "failed_precondition",
        "not enabled",
        "create on a project with prebuilds disabled",
    )
    expect_error(
        lambda: prebuilds_api.update_warm_pool(warm_pool_id=UNKNOWN_ID, max_size=2), gitpod.NotFoundError, 404, "not_found", "warm pool", "update_warm_pool of an unknown ID"
    )
    mine = prebuilds_api.create(project_id=args.project_id, spec={}).prebuild
    other_org = Gitpod(bearer_token=args.other_org_api_key, base_url=args.base_url + "/api", _strict_response_validation=True, timeout=30)
    expect_error(lambda: other_org.prebuilds.retrieve(prebuild_id=mine.id), gitpod.NotFoundError, 404, "not_found", "not found", "another organization's prebuild")
    wrong_key = Gitpod(bearer_token="not-a-key", base_url=args.base_url + "/api", _strict_response_validation=True, timeout=30)
    expect_error(lambda: wrong_key.prebuilds.list().prebuilds, gitpod.AuthenticationError, 401, "unauthenticated", "API key", "an unknown API key")

    # 409 is retried by this client (as a lock timeout) unless told not to: without retries.
    pool = pool_for(args.project_id, args.class_id)
    no_retries = client.with_options(max_retries=0)
    expect_error(
        lambda: no_retries.prebuilds.create_warm_pool(project_id=args.project_id, environment_class_id=args.class_id),
        gitpod.ConflictError,
        409,
        "already_exists",
        "already exists",
        "a second warm pool for the same pair",
    )
    check(pool.id in [p.id for p in prebuilds_api.list_warm_pools()], "the first pool is still there")


@section
def empty_lists():
    # SERVER BUG (see tests/api/interop.rs): with no match, prebuildd answers
    # {"pagination":{}} and leaves out the empty `prebuilds` / `warmPools`
    # array, which this client's page models require; under strict validation
    # the client raises APIResponseValidationError instead of an empty page.
    try:
        page = prebuilds_api.list(filter={"project_ids": [args.disabled_project_id]})
        equal(list(page), [], "list with no match: an empty page")
    except gitpod.APIResponseValidationError as error:
        check(False, "list with no match: the response passes strict validation (SERVER BUG: `prebuilds` is missing)", error.body)
    try:
        page = prebuilds_api.list_warm_pools(filter={"project_ids": [args.disabled_project_id]})
        equal(list(page), [], "list_warm_pools with no match: an empty page")
    except gitpod.APIResponseValidationError as error:
        check(False, "list_warm_pools with no match: the response passes strict validation (SERVER BUG: `warmPools` is missing)", error.body)


def wait_for(fetch, done, what, seconds=30):
    """Polls `fetch()` until `done(value)`, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            check(done(value), what, value)
            return value
        time.sleep(0.05)


@section
def lifecycle():
    ok = prebuilds_api.create(project_id=args.project_id, spec={}).prebuild
    bad = prebuilds_api.create(project_id=args.second_project_id, spec={}).prebuild
    pool = prebuilds_api.create_warm_pool(project_id=args.project_id, environment_class_id=args.class_id, min_size=1, max_size=2).warm_pool
    final = {"PREBUILD_PHASE_COMPLETED", "PREBUILD_PHASE_FAILED"}

    done = wait_for(lambda: prebuilds_api.retrieve(prebuild_id=ok.id).prebuild, lambda p: p.status.phase in final, "a prebuild finishes")
    status = done.status
    equal(status.phase, "PREBUILD_PHASE_COMPLETED", "COMPLETED")
    check(isinstance(status.completion_time, datetime.datetime), "COMPLETED: completion time", status.completion_time)
    check(UUID_V7.match(status.environment_id or ""), "COMPLETED: environment ID", status.environment_id)
    equal(status.snapshot_completion_percentage, 100, "COMPLETED: snapshot 100%")
    check(isinstance(status.snapshot_size_bytes, str) and status.snapshot_size_bytes.isdigit(), "COMPLETED: snapshot size (an int64 as a string)", status.snapshot_size_bytes)
    check(int(status.status_version) > 1, "COMPLETED: status version grew", status.status_version)
    equal((status.failure_message, done.spec.spec_version), (None, "1"), "COMPLETED: no failure, spec unchanged")

    failed = wait_for(lambda: prebuilds_api.retrieve(prebuild_id=bad.id).prebuild, lambda p: p.status.phase in final, "another prebuild finishes").status
    equal(failed.phase, "PREBUILD_PHASE_FAILED", "FAILED")
    check(bool(failed.failure_message), "FAILED: a failure message", failed.failure_message)

    ready = wait_for(
        lambda: prebuilds_api.retrieve_warm_pool(warm_pool_id=pool.id).warm_pool,
        lambda p: p.status.phase == "WARM_POOL_PHASE_READY",
        "the warm pool becomes READY",
    )
    equal(ready.spec.snapshot_id, ok.id, "READY: its snapshot is the completed prebuild")
    check(int(ready.spec.spec_version) > 1, "READY: the snapshot change grew the spec version", ready.spec.spec_version)
    check((ready.status.running_instances or 0) >= 1 and ready.status.desired_size == 1, "READY: instances reported", ready.status)

    listed = {p.id: p for p in prebuilds_api.list(page_size=1)}
    check({ok.id, bad.id} <= set(listed), "list: finished prebuilds pass strict validation, page by page")
    check(pool.id in [p.id for p in prebuilds_api.list_warm_pools()], "list_warm_pools: a READY pool passes strict validation")

    # The logs token reads the prebuild's (archived) log, as status.logUrl's path says.
    token = prebuilds_api.create_logs_token(prebuild_id=ok.id).access_token
    path = "/logs/prebuilds/" + ok.id
    check(done.status.log_url.endswith(path), "the log URL", done.status.log_url)
    response = httpx.get(args.base_url + path, headers={"Authorization": "Bearer " + token}, timeout=30)
    check(response.status_code == 200 and ok.id in response.text, "the logs token reads the log", (response.status_code, response.text[:300]))
    response = httpx.get(args.base_url + "/logs/prebuilds/" + bad.id, headers={"Authorization": "Bearer " + token}, timeout=30)
    equal(response.status_code, 401, "the logs token does not read another prebuild's log")


checks.run(SECTIONS, args.section)
