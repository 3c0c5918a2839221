// The warm pools: sizes, what the runner reports, the snapshot they warm;
// min/max edited in place (UpdateWarmPool), deletion after a confirmation.
import { useState, type FormEvent } from "react";
import { Link } from "wouter";
import { describeError, loadNames, prebuilds, type Names } from "./api.js";
import { WarmPoolPhase, type WarmPool } from "./gen/gitpod/v1/prebuild_pb.js";
import { shortId, warmPoolPhaseName } from "./format.js";
import { usePolling } from "./usePolling.js";

const POLL_MS = 2000;

async function loadAll(): Promise<{ pools: WarmPool[]; names?: Names }> {
  const pools: WarmPool[] = [];
  let token = "";
  do {
    const response = await prebuilds.listWarmPools({ pagination: { pageSize: 100, token } });
    pools.push(...response.warmPools);
    token = response.pagination?.nextToken ?? "";
  } while (token !== "");
  return { pools, names: await loadNames().catch(() => undefined) };
}

export function WarmPools() {
  const { value: loaded, error, reload } = usePolling(loadAll, POLL_MS, "pools");
  const value = loaded?.pools;
  return (
    <section>
      <h1>Warm pools</h1>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {value === undefined && !error && <p className="muted">Loading…</p>}
      {value !== undefined && value.length === 0 && <p className="muted">No warm pools.</p>}
      {value !== undefined && value.length > 0 && (
        <table className="list" data-testid="warm-pool-list">
          <thead>
            <tr>
              <th>ID</th>
              <th>Project</th>
              <th>Class</th>
              <th>Min / max</th>
              <th>Desired</th>
              <th>Running</th>
              <th>Stopped</th>
              <th>Snapshot</th>
              <th>Phase</th>
              <th></th>
            </tr>
          </thead>
          <tbody>
            {value.map((pool) => (
              <PoolRow key={pool.id} pool={pool} names={loaded?.names} changed={reload} />
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function PoolRow(props: { pool: WarmPool; names?: Names; changed: () => void }) {
  const { pool } = props;
  const [editing, setEditing] = useState(false);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [min, setMin] = useState("");
  const [max, setMax] = useState("");
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<string | undefined>(undefined);
  const phase = pool.status?.phase ?? WarmPoolPhase.UNSPECIFIED;
  const deleting = phase === WarmPoolPhase.DELETING;
  const snapshotId = pool.spec?.snapshotId;

  const act = async (action: () => Promise<unknown>) => {
    setBusy(true);
    setActionError(undefined);
    try {
      await action();
      return true;
    } catch (e) {
      setActionError(describeError(e));
      return false;
    } finally {
      setBusy(false);
      props.changed();
    }
  };

  const save = async (event: FormEvent) => {
    event.preventDefault();
    const ok = await act(() =>
      prebuilds.updateWarmPool({ warmPoolId: pool.id, minSize: Number(min), maxSize: Number(max) }),
    );
    if (ok) setEditing(false);
  };

  return (
    <>
      <tr data-warm-pool-id={pool.id}>
        <td className="mono">{pool.id}</td>
        <td title={pool.metadata?.projectId}>
          {props.names?.projects.get(pool.metadata?.projectId ?? "") ?? shortId(pool.metadata?.projectId ?? "")}
        </td>
        <td title={pool.metadata?.environmentClassId}>
          {props.names?.classes.get(pool.metadata?.environmentClassId ?? "") ?? shortId(pool.metadata?.environmentClassId ?? "")}
        </td>
        <td data-testid="sizes">
          {editing ? (
            <form className="sizes" onSubmit={save}>
              <input name="min" type="number" min={0} max={20} required value={min} onChange={(e) => setMin(e.target.value)} aria-label="min size" />
              <span>/</span>
              <input name="max" type="number" min={1} max={20} required value={max} onChange={(e) => setMax(e.target.value)} aria-label="max size" />
              <button type="submit" disabled={busy}>
                Save
              </button>
              <button type="button" onClick={() => setEditing(false)}>
                Cancel
              </button>
            </form>
          ) : (
            `${pool.spec?.minSize ?? 0} / ${pool.spec?.maxSize ?? 0}`
          )}
        </td>
        <td data-testid="desired">{pool.status?.desiredSize ?? 0}</td>
        <td data-testid="running">{pool.status?.runningInstances ?? 0}</td>
        <td data-testid="stopped">{pool.status?.stoppedInstances ?? 0}</td>
        <td className="mono" data-testid="snapshot">
          {snapshotId ? (
            <Link href={`/prebuilds/${snapshotId}`} title={snapshotId}>
              {shortId(snapshotId)}
            </Link>
          ) : (
            "none yet"
          )}
        </td>
        <td data-testid="phase">
          <span className={`phase phase-${warmPoolPhaseName(phase).toLowerCase()}`}>{warmPoolPhaseName(phase)}</span>
        </td>
        <td className="row-actions">
          {!editing && (
            <button
              type="button"
              disabled={busy || deleting}
              onClick={() => {
                setMin(String(pool.spec?.minSize ?? 0));
                setMax(String(pool.spec?.maxSize ?? 1));
                setEditing(true);
              }}
            >
              Edit sizes
            </button>
          )}
          {!confirmDelete ? (
            <button type="button" className="danger" disabled={busy || deleting} onClick={() => setConfirmDelete(true)}>
              Delete
            </button>
          ) : (
            <>
              <button
                type="button"
                className="danger"
                disabled={busy}
                onClick={() => act(() => prebuilds.deleteWarmPool({ warmPoolId: pool.id })).then(() => setConfirmDelete(false))}
              >
                Delete this pool
              </button>
              <button type="button" onClick={() => setConfirmDelete(false)}>
                Keep it
              </button>
            </>
          )}
        </td>
      </tr>
      {(pool.status?.failureMessage || actionError) && (
        <tr className="detail">
          <td colSpan={10}>
            {pool.status?.failureMessage && (
              <p className="failure" data-testid="pool-failure">
                {pool.status.failureMessage}
              </p>
            )}
            {actionError && (
              <p className="error" role="alert">
                {actionError}
              </p>
            )}
          </td>
        </tr>
      )}
    </>
  );
}
