"""The official Connect SDK (PyPI gitpod-sdk 1.2.0) against prebuildd.

Usage: python connect_sdk.py BASE_URL API_KEY PROJECT_ID ENVIRONMENT_CLASS_ID

Calls all eleven PrebuildService methods through `ona_sdk.create_client`
(binary protobuf over Connect) and checks the results and two errors.
Prints `N passed, 0 failed`; exits non-zero on the first failure.
"""

import sys

import ona_sdk
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from gitpod.v1 import pagination_pb2, prebuild_pb2 as pb

base_url, api_key, project_id, class_id = sys.argv[1:5]
client = ona_sdk.create_client(api_key=api_key, base_url=base_url + "/api")
prebuilds = client.services.prebuild
passed = 0


def check(condition, what):
    global passed
    if not condition:
        print(f"FAILED: {what}")
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1


created = prebuilds.create_prebuild(pb.CreatePrebuildRequest(project_id=project_id, spec=pb.PrebuildSpec()))
prebuild = created.prebuild
check(prebuild.metadata.project_id == project_id, "CreatePrebuild: project")
check(prebuild.spec.timeout.seconds == 3600, "CreatePrebuild: default timeout")
check(prebuild.status.status_version == 1, "CreatePrebuild: status version")
check(prebuild.metadata.triggered_by == pb.PrebuildMetadata.PREBUILD_TRIGGER_MANUAL, "CreatePrebuild: trigger")

got = prebuilds.get_prebuild(pb.GetPrebuildRequest(prebuild_id=prebuild.id)).prebuild
check(got.id == prebuild.id and got.metadata.created_at == prebuild.metadata.created_at, "GetPrebuild")

listed = prebuilds.list_prebuilds(
    pb.ListPrebuildsRequest(
        filter=pb.ListPrebuildsRequest.Filter(project_ids=[project_id]),
        pagination=pagination_pb2.PaginationRequest(page_size=10),
    )
)
check(prebuild.id in [p.id for p in listed.prebuilds], "ListPrebuilds: finds it")

token = prebuilds.create_prebuild_logs_token(pb.CreatePrebuildLogsTokenRequest(prebuild_id=prebuild.id)).access_token
check(len(token) > 20, "CreatePrebuildLogsToken")

cancelled = prebuilds.cancel_prebuild(pb.CancelPrebuildRequest(prebuild_id=prebuild.id)).prebuild
check(cancelled.spec.desired_phase == pb.PREBUILD_PHASE_CANCELLED, "CancelPrebuild: desired phase")
check(cancelled.status.phase in (pb.PREBUILD_PHASE_CANCELLING, pb.PREBUILD_PHASE_CANCELLED), "CancelPrebuild: phase")

prebuilds.delete_prebuild(pb.DeletePrebuildRequest(prebuild_id=prebuild.id))
passed += 1

pool = prebuilds.create_warm_pool(pb.CreateWarmPoolRequest(project_id=project_id, environment_class_id=class_id, min_size=0, max_size=3)).warm_pool
check(pool.spec.min_size == 0 and pool.spec.max_size == 3 and pool.spec.HasField("min_size"), "CreateWarmPool: sizes with presence")
check(pool.metadata.environment_class_id == class_id, "CreateWarmPool: class")

got_pool = prebuilds.get_warm_pool(pb.GetWarmPoolRequest(warm_pool_id=pool.id)).warm_pool
check(got_pool.id == pool.id, "GetWarmPool")

pools = prebuilds.list_warm_pools(pb.ListWarmPoolsRequest(filter=pb.ListWarmPoolsRequest.Filter(project_ids=[project_id]))).warm_pools
check(pool.id in [p.id for p in pools], "ListWarmPools")

updated = prebuilds.update_warm_pool(pb.UpdateWarmPoolRequest(warm_pool_id=pool.id, max_size=5)).warm_pool
check(updated.spec.max_size == 5 and updated.spec.spec_version == pool.spec.spec_version + 1, "UpdateWarmPool")

prebuilds.delete_warm_pool(pb.DeleteWarmPoolRequest(warm_pool_id=pool.id))
passed += 1

for request, code, what in [
    (pb.GetPrebuildRequest(prebuild_id="07e03a28-65a5-4d98-b532-8ea67b188048"), Code.NOT_FOUND, "unknown prebuild"),
    (pb.GetPrebuildRequest(prebuild_id="not-a-uuid"), Code.INVALID_ARGUMENT, "bad UUID"),
]:
    try:
        prebuilds.get_prebuild(request)
        check(False, f"GetPrebuild of a {what} must fail")
    except ConnectError as error:
        check(error.code == code, f"GetPrebuild of a {what}: {error.code} {error}")
    except Exception as error:  # the SDK may map errors to its own types
        cause = error.__cause__
        check(isinstance(cause, ConnectError) and cause.code == code, f"GetPrebuild of a {what}: {type(error).__name__} {error}")

print(f"{passed} passed, 0 failed")
