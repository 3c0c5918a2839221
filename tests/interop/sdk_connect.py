"""The official Connect SDK (PyPI gitpod-sdk 1.2.0) against a live prebuildd.

Run with the Python that has gitpod-sdk==1.2.0 (.tools/sdk-1.2/bin/python);
the arguments are described in harness.py. The SDK is used as its users use
it: `ona_sdk.create_client(api_key=..., base_url="<root>/api")`, whose
`services.prebuild` is the generated `PrebuildServiceClientSync`: binary
protobuf (`application/proto`) POSTed to
`<base_url>/gitpod.v1.PrebuildService/<Method>`, or the Connect GET form with
`use_get=True` for the NO_SIDE_EFFECTS methods.

Sections:
  prebuilds    CreatePrebuild, GetPrebuild (POST and GET), ListPrebuilds with
               filters (POST and GET), CreatePrebuildLogsToken,
               CancelPrebuild, DeletePrebuild
  warm_pools   CreateWarmPool with min/max, GetWarmPool (POST and GET),
               ListWarmPools (POST and GET), UpdateWarmPool, DeleteWarmPool
  pages        ListPrebuilds page by page with nextToken (and a gzip'd page)
  errors       error codes as connectrpc's ConnectError and as the SDK's
               typed errors (ona_sdk.NotFoundError, ValidationError, ...)
  protocols    the generated client with its own defaults (gzip request
               bodies) over Connect, and over gRPC (h2c) and gRPC-Web
  lifecycle    (only when selected; needs a running reconciler, --project-id
               completing and --second-project-id failing) a COMPLETED and a
               FAILED prebuild, a READY warm pool on the completed snapshot
"""

import time

import ona_sdk
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from gitpod.v1 import pagination_pb2
from gitpod.v1 import prebuild_pb2 as pb
from gitpod.v1.identity_pb2 import PRINCIPAL_USER
from gitpod.v1.prebuild_connect import PrebuildServiceClientSync
from google.protobuf.duration_pb2 import Duration
from pyqwest import HTTPVersion, SyncClient, SyncHTTPTransport

from harness import UNKNOWN_ID, UUID_V7, Checks, parse_args

SECTIONS = {}


def section(function):
    SECTIONS[function.__name__] = function
    return function


args = parse_args(__doc__, ["prebuilds", "warm_pools", "pages", "errors", "protocols", "lifecycle"], only_if_selected=["lifecycle"])
checks = Checks()
check, equal = checks.check, checks.equal

# The SDK's documented entry point; the hosted default is https://app.ona.com/api.
client = ona_sdk.create_client(api_key=args.api_key, base_url=args.base_url + "/api", timeout=30)
service = client.services.prebuild


def create_prebuild(project_id, **spec):
    return service.create_prebuild(pb.CreatePrebuildRequest(project_id=project_id, spec=pb.PrebuildSpec(**spec))).prebuild


@section
def prebuilds():
    created = service.create_prebuild(
        pb.CreatePrebuildRequest(project_id=args.project_id, spec=pb.PrebuildSpec(timeout=Duration(seconds=1200)))
    ).prebuild
    check(UUID_V7.match(created.id), "CreatePrebuild: the ID is a lowercase version 7 UUID", created.id)
    equal(created.metadata.organization_id, args.org_id, "CreatePrebuild: organization")
    equal(created.metadata.project_id, args.project_id, "CreatePrebuild: project")
    equal(created.metadata.environment_class_id, args.class_id, "CreatePrebuild: the project's default class")
    equal((created.metadata.creator.id, created.metadata.creator.principal), (args.subject_id, PRINCIPAL_USER), "CreatePrebuild: creator")
    equal(created.metadata.triggered_by, pb.PrebuildMetadata.PREBUILD_TRIGGER_MANUAL, "CreatePrebuild: triggered by")
    check(created.metadata.created_at.seconds > 0, "CreatePrebuild: created_at set")
    equal(created.metadata.updated_at, created.metadata.created_at, "CreatePrebuild: updated_at == created_at")
    equal(created.spec.timeout.seconds, 1200, "CreatePrebuild: spec.timeout")
    equal(created.spec.desired_phase, pb.PREBUILD_PHASE_COMPLETED, "CreatePrebuild: desired phase")
    equal(created.spec.spec_version, 1, "CreatePrebuild: spec version")
    equal(created.status.phase, pb.PREBUILD_PHASE_PENDING, "CreatePrebuild: phase")
    equal(created.status.status_version, 1, "CreatePrebuild: status version")
    check(created.status.log_url.endswith("/logs/prebuilds/" + created.id), "CreatePrebuild: log URL", created.status.log_url)

    got = service.get_prebuild(pb.GetPrebuildRequest(prebuild_id=created.id)).prebuild
    equal(got, created, "GetPrebuild: the same prebuild")
    got = service.get_prebuild(pb.GetPrebuildRequest(prebuild_id=created.id.upper()), use_get=True).prebuild
    equal(got, created, "GetPrebuild (Connect GET, upper-case ID): the same prebuild")

    other = create_prebuild(args.second_project_id)
    equal(other.spec.timeout.seconds, 1800, "CreatePrebuild: the project's timeout is the default")
    by_project = pb.ListPrebuildsRequest(
        filter=pb.ListPrebuildsRequest.Filter(project_ids=[args.project_id]),
        pagination=pagination_pb2.PaginationRequest(page_size=10),
    )
    listed = service.list_prebuilds(by_project)
    ids = [p.id for p in listed.prebuilds]
    check(created.id in ids, "ListPrebuilds: the project filter finds it", ids)
    check(other.id not in ids, "ListPrebuilds: the project filter leaves out another project's", ids)
    check(all(p.metadata.project_id == args.project_id for p in listed.prebuilds), "ListPrebuilds: every item is the project's")
    equal(listed.pagination.next_token, "", "ListPrebuilds: one page, no next token")
    listed_get = service.list_prebuilds(by_project, use_get=True)
    equal(listed_get, listed, "ListPrebuilds (Connect GET): the same page")
    everything = [p.id for p in service.list_prebuilds(pb.ListPrebuildsRequest()).prebuilds]
    equal(everything[:2], [other.id, created.id], "ListPrebuilds: newest first")

    token = service.create_prebuild_logs_token(pb.CreatePrebuildLogsTokenRequest(prebuild_id=created.id)).access_token
    check(len(token) >= 20, "CreatePrebuildLogsToken: an access token", token)

    cancelled = service.cancel_prebuild(pb.CancelPrebuildRequest(prebuild_id=created.id)).prebuild
    equal(cancelled.spec.desired_phase, pb.PREBUILD_PHASE_CANCELLED, "CancelPrebuild: desired phase")
    equal(cancelled.status.phase, pb.PREBUILD_PHASE_CANCELLED, "CancelPrebuild: a pending prebuild is cancelled at once")
    check(cancelled.status.HasField("completion_time"), "CancelPrebuild: completion time set")
    equal((cancelled.spec.spec_version, cancelled.status.status_version), (2, 2), "CancelPrebuild: both versions grew")
    again = service.cancel_prebuild(pb.CancelPrebuildRequest(prebuild_id=created.id)).prebuild
    equal(again, cancelled, "CancelPrebuild: again, unchanged")

    deleted = service.delete_prebuild(pb.DeletePrebuildRequest(prebuild_id=created.id))
    equal(deleted, pb.DeletePrebuildResponse(), "DeletePrebuild: an empty response")
    gone = service.get_prebuild(pb.GetPrebuildRequest(prebuild_id=created.id)).prebuild
    equal(gone.spec.desired_phase, pb.PREBUILD_PHASE_DELETED, "DeletePrebuild: desired phase DELETED")
    equal(gone.status.phase, pb.PREBUILD_PHASE_DELETING, "DeletePrebuild: phase DELETING")
    equal(service.delete_prebuild(pb.DeletePrebuildRequest(prebuild_id=created.id)), pb.DeletePrebuildResponse(), "DeletePrebuild: again, harmless")


@section
def warm_pools():
    created = service.create_warm_pool(
        pb.CreateWarmPoolRequest(project_id=args.project_id, environment_class_id=args.second_class_id, min_size=0, max_size=3)
    ).warm_pool
    check(UUID_V7.match(created.id), "CreateWarmPool: the ID is a lowercase version 7 UUID", created.id)
    check(created.spec.HasField("min_size") and created.spec.HasField("max_size"), "CreateWarmPool: min/max sizes present")
    equal((created.spec.min_size, created.spec.max_size), (0, 3), "CreateWarmPool: min/max sizes")
    equal(created.spec.desired_size, 0, "CreateWarmPool: no deprecated desired size")
    check(not created.spec.HasField("snapshot_id"), "CreateWarmPool: no snapshot yet")
    equal(created.spec.desired_phase, pb.WARM_POOL_PHASE_READY, "CreateWarmPool: desired phase")
    equal(created.spec.spec_version, 1, "CreateWarmPool: spec version")
    equal(created.status.phase, pb.WARM_POOL_PHASE_PENDING, "CreateWarmPool: phase")
    meta = created.metadata
    equal(
        (meta.organization_id, meta.project_id, meta.environment_class_id, meta.runner_id),
        (args.org_id, args.project_id, args.second_class_id, args.runner_id),
        "CreateWarmPool: metadata",
    )

    get = pb.GetWarmPoolRequest(warm_pool_id=created.id)
    equal(service.get_warm_pool(get).warm_pool, created, "GetWarmPool: the same pool")
    equal(service.get_warm_pool(get, use_get=True).warm_pool, created, "GetWarmPool (Connect GET): the same pool")

    listing = pb.ListWarmPoolsRequest(
        filter=pb.ListWarmPoolsRequest.Filter(project_ids=[args.project_id], environment_class_ids=[args.second_class_id])
    )
    equal([p.id for p in service.list_warm_pools(listing).warm_pools], [created.id], "ListWarmPools: the filters find exactly it")
    equal(service.list_warm_pools(listing, use_get=True).warm_pools, [created], "ListWarmPools (Connect GET): the same")
    listing.filter.environment_class_ids[:] = [args.class_id]
    equal(list(service.list_warm_pools(listing).warm_pools), [], "ListWarmPools: another class's filter leaves it out")

    updated = service.update_warm_pool(pb.UpdateWarmPoolRequest(warm_pool_id=created.id, max_size=5)).warm_pool
    equal((updated.spec.min_size, updated.spec.max_size), (0, 5), "UpdateWarmPool: max size changed, min size kept")
    equal(updated.spec.spec_version, 2, "UpdateWarmPool: spec version grew")
    same = service.update_warm_pool(pb.UpdateWarmPoolRequest(warm_pool_id=created.id, max_size=5)).warm_pool
    equal(same.spec.spec_version, 2, "UpdateWarmPool: an unchanged size keeps the spec version")

    deleted = service.delete_warm_pool(pb.DeleteWarmPoolRequest(warm_pool_id=created.id))
    equal(deleted, pb.DeleteWarmPoolResponse(), "DeleteWarmPool: an empty response")
    gone = service.get_warm_pool(get).warm_pool
    equal(gone.spec.desired_phase, pb.WARM_POOL_PHASE_DELETED, "DeleteWarmPool: desired phase DELETED")
    equal(gone.status.phase, pb.WARM_POOL_PHASE_DELETING, "DeleteWarmPool: phase DELETING")

    legacy = service.create_warm_pool(
        pb.CreateWarmPoolRequest(project_id=args.second_project_id, environment_class_id=args.class_id, desired_size=2)
    ).warm_pool
    equal(
        (legacy.spec.desired_size, legacy.spec.min_size, legacy.spec.max_size),
        (2, 2, 2),
        "CreateWarmPool: the deprecated desired_size sets min and max",
    )


@section
def pages():
    by_project = pb.ListPrebuildsRequest.Filter(project_ids=[args.second_project_id])
    before = [p.id for p in service.list_prebuilds(pb.ListPrebuildsRequest(filter=by_project)).prebuilds]
    ids = [create_prebuild(args.second_project_id).id for _ in range(7)]
    expected = ids[::-1] + before
    request = pb.ListPrebuildsRequest(filter=by_project, pagination=pagination_pb2.PaginationRequest(page_size=3))
    seen, sizes = [], []
    for _ in range(10):
        page = service.list_prebuilds(request)
        sizes.append(len(page.prebuilds))
        seen += [p.id for p in page.prebuilds]
        if not page.pagination.next_token:
            break
        request.pagination.token = page.pagination.next_token
    check(len(sizes) >= 3 and all(size == 3 for size in sizes[:-1]) and 1 <= sizes[-1] <= 3, "ListPrebuilds: pages of 3 up to the last", sizes)
    equal(seen, expected, "ListPrebuilds: every prebuild once, newest first, then no next token")
    # Seven prebuilds in one page are over 1 KiB: the server gzips the page, the SDK inflates it.
    whole = service.list_prebuilds(pb.ListPrebuildsRequest(filter=by_project))
    equal([p.id for p in whole.prebuilds], expected, "ListPrebuilds: one large (compressed) page")


def expect_error(rpc, request, code, sdk_error, needle, what, operation="prebuilds"):
    """The call fails as connectrpc's ConnectError with `code`, and through
    the SDK's own error mapping (what its helpers raise) as `sdk_error`."""
    try:
        response = rpc(request)
        check(False, f"{what}: fails", f"succeeded with {response}")
        return
    except ConnectError as error:
        equal(error.code, code, f"{what}: ConnectError code")
        check(needle in error.message, f"{what}: message mentions {needle!r}", error.message)
    try:
        client._unary(rpc, request, operation)
    except ona_sdk.SDKError as error:
        check(type(error) is sdk_error, f"{what}: the SDK raises {sdk_error.__name__}", type(error).__name__)
        check(isinstance(error.cause, ConnectError) and error.cause.code == code, f"{what}: its cause has the code", error.cause)


@section
def errors():
    prebuild = create_prebuild(args.project_id)
    expect_error(service.get_prebuild, pb.GetPrebuildRequest(prebuild_id=UNKNOWN_ID), Code.NOT_FOUND, ona_sdk.NotFoundError, UNKNOWN_ID, "GetPrebuild of an unknown ID")
    expect_error(
        service.get_prebuild, pb.GetPrebuildRequest(prebuild_id="not-a-uuid"), Code.INVALID_ARGUMENT, ona_sdk.ValidationError, "prebuild_id", "GetPrebuild of a bad UUID"
    )
    expect_error(
        lambda r, **kw: service.get_prebuild(r, use_get=True, **kw),
        pb.GetPrebuildRequest(prebuild_id=UNKNOWN_ID),
        Code.NOT_FOUND,
        ona_sdk.NotFoundError,
        "not found",
        "GetPrebuild (Connect GET) of an unknown ID",
    )
    expect_error(
        service.create_prebuild,
        pb.CreatePrebuildRequest(project_id=args.project_id, spec=pb.PrebuildSpec(timeout=Duration(seconds=60))),
        Code.INVALID_ARGUMENT,
        ona_sdk.ValidationError,
        "spec.timeout",
        "CreatePrebuild with a 60s timeout",
    )
    expect_error(
        service.create_prebuild,
        pb.CreatePrebuildRequest(project_id=args.disabled_project_id, spec=pb.PrebuildSpec()),
        Code.FAILED_PRECONDITION,
        ona_sdk.EnvironmentPolicyError,
        "not enabled",
        "CreatePrebuild on a project with prebuilds disabled",
    )
    service.delete_prebuild(pb.DeletePrebuildRequest(prebuild_id=prebuild.id))
    expect_error(
        service.cancel_prebuild,
        pb.CancelPrebuildRequest(prebuild_id=prebuild.id),
        Code.FAILED_PRECONDITION,
        ona_sdk.EnvironmentPolicyError,
        "being deleted",
        "CancelPrebuild of a deleting prebuild",
    )
    pool = pb.CreateWarmPoolRequest(project_id=args.project_id, environment_class_id=args.class_id)
    service.create_warm_pool(pool)
    expect_error(service.create_warm_pool, pool, Code.ALREADY_EXISTS, ona_sdk.SDKError, "already exists", "a second warm pool for the same pair")
    expect_error(
        service.update_warm_pool,
        pb.UpdateWarmPoolRequest(warm_pool_id=UNKNOWN_ID, max_size=2),
        Code.NOT_FOUND,
        ona_sdk.NotFoundError,
        "warm pool " + UNKNOWN_ID + " not found",
        "UpdateWarmPool of an unknown ID",
    )

    other_org = ona_sdk.create_client(api_key=args.other_org_api_key, base_url=args.base_url + "/api", timeout=30).services.prebuild
    expect_error(other_org.get_prebuild, pb.GetPrebuildRequest(prebuild_id=prebuild.id), Code.NOT_FOUND, ona_sdk.NotFoundError, "not found", "another organization's prebuild")
    check(prebuild.id not in [p.id for p in other_org.list_prebuilds(pb.ListPrebuildsRequest()).prebuilds], "another organization's list leaves it out")
    wrong_key = ona_sdk.create_client(api_key="not-a-key", base_url=args.base_url + "/api", timeout=30).services.prebuild
    expect_error(wrong_key.list_prebuilds, pb.ListPrebuildsRequest(), Code.UNAUTHENTICATED, ona_sdk.AuthenticationRequiredError, "API key", "an unknown API key")


@section
def protocols():
    authorization = {"Authorization": "Bearer " + args.api_key}
    h2c = SyncClient(SyncHTTPTransport(http_version=HTTPVersion.HTTP2))
    variants = [
        # The generated client's defaults: Connect, protobuf, gzip'd request bodies.
        ("connect+gzip", PrebuildServiceClientSync(args.base_url + "/api")),
        ("connect over h2c", PrebuildServiceClientSync(args.base_url, http_client=h2c)),
        ("grpc", PrebuildServiceClientSync(args.base_url, protocol=ProtocolType.GRPC, http_client=h2c)),
        ("grpc-web", PrebuildServiceClientSync(args.base_url, protocol=ProtocolType.GRPC_WEB)),
    ]
    for name, generated in variants:
        created = generated.create_prebuild(
            pb.CreatePrebuildRequest(project_id=args.project_id, spec=pb.PrebuildSpec(timeout=Duration(seconds=900))), headers=authorization
        ).prebuild
        equal(created.spec.timeout.seconds, 900, f"{name}: CreatePrebuild")
        got = generated.get_prebuild(pb.GetPrebuildRequest(prebuild_id=created.id), headers=authorization).prebuild
        equal(got, created, f"{name}: GetPrebuild")
        try:
            generated.get_prebuild(pb.GetPrebuildRequest(prebuild_id=UNKNOWN_ID), headers=authorization)
            check(False, f"{name}: an unknown ID fails")
        except ConnectError as error:
            equal(error.code, Code.NOT_FOUND, f"{name}: an unknown ID is not_found")
        try:
            generated.list_prebuilds(pb.ListPrebuildsRequest())
            check(False, f"{name}: no key fails")
        except ConnectError as error:
            equal(error.code, Code.UNAUTHENTICATED, f"{name}: no key is unauthenticated")


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
    ok = create_prebuild(args.project_id)
    bad = create_prebuild(args.second_project_id)
    pool = service.create_warm_pool(
        pb.CreateWarmPoolRequest(project_id=args.project_id, environment_class_id=args.class_id, min_size=1, max_size=2)
    ).warm_pool
    final = (pb.PREBUILD_PHASE_COMPLETED, pb.PREBUILD_PHASE_FAILED)

    def get(prebuild_id):
        return service.get_prebuild(pb.GetPrebuildRequest(prebuild_id=prebuild_id)).prebuild

    done = wait_for(lambda: get(ok.id), lambda p: p.status.phase in final, "a prebuild finishes")
    status = done.status
    equal(status.phase, pb.PREBUILD_PHASE_COMPLETED, "COMPLETED")
    check(status.HasField("completion_time") and status.completion_time.seconds > 0, "COMPLETED: completion time")
    check(UUID_V7.match(status.environment_id), "COMPLETED: environment ID", status.environment_id)
    equal(status.snapshot_completion_percentage, 100, "COMPLETED: snapshot 100%")
    check(status.snapshot_size_bytes > 0, "COMPLETED: snapshot size (int64)", status.snapshot_size_bytes)
    check(status.status_version > 1, "COMPLETED: status version grew", status.status_version)

    failed = wait_for(lambda: get(bad.id), lambda p: p.status.phase in final, "another prebuild finishes").status
    equal(failed.phase, pb.PREBUILD_PHASE_FAILED, "FAILED")
    check(failed.failure_message != "", "FAILED: a failure message", failed.failure_message)

    ready = wait_for(
        lambda: service.get_warm_pool(pb.GetWarmPoolRequest(warm_pool_id=pool.id), use_get=True).warm_pool,
        lambda p: p.status.phase == pb.WARM_POOL_PHASE_READY,
        "the warm pool becomes READY",
    )
    check(ready.spec.HasField("snapshot_id") and ready.spec.snapshot_id == ok.id, "READY: its snapshot is the completed prebuild", ready.spec)
    check(ready.status.running_instances >= 1 and ready.status.desired_size == 1, "READY: instances reported", ready.status)


checks.run(SECTIONS, args.section)
