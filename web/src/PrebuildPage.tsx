// One prebuild: its status (refreshed every second while it runs), its
// failure or warning, its snapshot, the live log, and cancel and delete.
import { useState } from "react";
import { Link, useLocation } from "wouter";
import { describeError, isNotFound, loadNames, loadSources, prebuilds, type Names } from "./api.js";
import type { PrebuildSource } from "./gen/prebuildd/v1/prebuild_source_pb.js";
import { PrebuildPhase, type Prebuild } from "./gen/gitpod/v1/prebuild_pb.js";
import {
  canCancel,
  FINAL_PHASES,
  formatBytes,
  formatSpan,
  formatTime,
  prebuildDuration,
  prebuildPhaseName,
  shortSha,
  sourceTriggerName,
  subjectName,
  triggerName,
} from "./format.js";
import { LogView } from "./LogView.js";
import { Phase } from "./PrebuildList.js";
import { useNow, usePolling } from "./usePolling.js";

type Loaded = { prebuild: Prebuild; source?: PrebuildSource; names?: Names } | { gone: true };

export function PrebuildPage(props: { id: string }) {
  const [, navigate] = useLocation();
  const now = useNow();
  const [actionError, setActionError] = useState<string | undefined>(undefined);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [busy, setBusy] = useState(false);
  const { value, error, reload } = usePolling<Loaded>(
    async () => {
      try {
        const response = await prebuilds.getPrebuild({ prebuildId: props.id });
        // prebuildd's extensions: what it builds, and names for the IDs.
        const [found, names] = await Promise.all([
          loadSources([props.id]).catch(() => new Map<string, PrebuildSource>()),
          loadNames().catch(() => undefined),
        ]);
        return { prebuild: response.prebuild!, source: found.get(props.id), names };
      } catch (e) {
        if (isNotFound(e)) return { gone: true };
        throw e;
      }
    },
    1000,
    props.id,
  );

  if (value === undefined) {
    return error ? <p className="error">{error}</p> : <p className="muted">Loading…</p>;
  }
  if ("gone" in value) {
    return (
      <section>
        <h1>Prebuild {props.id}</h1>
        <p data-testid="gone">This prebuild does not exist (any more).</p>
        <Link href="/">Back to the prebuilds</Link>
      </section>
    );
  }

  const { prebuild, source, names } = value;
  const phase = prebuild.status?.phase ?? PrebuildPhase.UNSPECIFIED;
  const status = prebuild.status;
  const metadata = prebuild.metadata;
  const finished = FINAL_PHASES.has(phase) || phase === PrebuildPhase.DELETING;

  const act = async (action: () => Promise<unknown>) => {
    setBusy(true);
    setActionError(undefined);
    try {
      await action();
    } catch (e) {
      setActionError(describeError(e));
    } finally {
      setBusy(false);
      reload();
    }
  };

  return (
    <section>
      <p>
        <Link href="/">← Prebuilds</Link>
      </p>
      <h1>
        Prebuild <span className="mono">{prebuild.id}</span> <Phase phase={phase} />
      </h1>
      {error && <p className="error">{error}</p>}
      {status?.failureMessage && (
        <p className="failure" data-testid="failure-message">
          {status.failureMessage}
        </p>
      )}
      {status?.warningMessage && (
        <p className="warning" data-testid="warning-message">
          {status.warningMessage}
        </p>
      )}
      <div className="actions">
        <button type="button" disabled={busy || !canCancel(phase)} onClick={() => act(() => prebuilds.cancelPrebuild({ prebuildId: prebuild.id }))}>
          Cancel
        </button>
        {!confirmDelete ? (
          <button type="button" className="danger" disabled={busy || phase === PrebuildPhase.DELETING} onClick={() => setConfirmDelete(true)}>
            Delete
          </button>
        ) : (
          <>
            <button
              type="button"
              className="danger"
              disabled={busy}
              onClick={() =>
                act(async () => {
                  await prebuilds.deletePrebuild({ prebuildId: prebuild.id });
                  navigate("/");
                })
              }
            >
              Delete this prebuild and its snapshot
            </button>
            <button type="button" onClick={() => setConfirmDelete(false)}>
              Keep it
            </button>
          </>
        )}
      </div>
      {actionError && (
        <p className="error" role="alert">
          {actionError}
        </p>
      )}
      <dl className="fields">
        <dt>Phase</dt>
        <dd data-testid="phase">{prebuildPhaseName(phase)}</dd>
        <dt>Desired phase</dt>
        <dd>{prebuildPhaseName(prebuild.spec?.desiredPhase ?? PrebuildPhase.UNSPECIFIED)}</dd>
        <dt>Project</dt>
        <dd data-testid="project">
          {names?.projects.get(metadata?.projectId ?? "") ?? ""} <span className="mono muted">{metadata?.projectId}</span>
        </dd>
        <dt>Environment class</dt>
        <dd>
          {names?.classes.get(metadata?.environmentClassId ?? "") ?? ""}{" "}
          <span className="mono muted">{metadata?.environmentClassId}</span>
        </dd>
        <dt>Trigger</dt>
        <dd data-testid="trigger">
          {triggerName(metadata?.triggeredBy ?? 0)}
          {source ? ` — ${sourceTriggerName(source)}` : ""}
        </dd>
        <dt>Commit</dt>
        <dd className="mono" data-testid="commit">
          {source?.commitSha ? `${source.commitSha} (${source.branch})` : "—"}
        </dd>
        {source?.incremental && (
          <>
            <dt>Incremental from</dt>
            <dd data-testid="base">
              <Link href={`/prebuilds/${source.basePrebuildId}`}>{source.basePrebuildId}</Link>{" "}
              <span className="mono">(commit {shortSha(source.baseCommitSha)})</span>; only updateContentCommand ran
            </dd>
          </>
        )}
        <dt>Creator</dt>
        <dd className="mono">{subjectName(metadata?.creator)}</dd>
        <dt>Executor</dt>
        <dd className="mono">{subjectName(metadata?.executor)}</dd>
        <dt>Created</dt>
        <dd>{formatTime(metadata?.createdAt)}</dd>
        <dt>Completed</dt>
        <dd>{formatTime(status?.completionTime) || "—"}</dd>
        <dt>Duration</dt>
        <dd>{prebuildDuration(prebuild, now)}</dd>
        <dt>Timeout</dt>
        <dd>{prebuild.spec?.timeout ? formatSpan(Number(prebuild.spec.timeout.seconds) * 1000) : "—"}</dd>
        <dt>Environment</dt>
        <dd className="mono">{status?.environmentId || "—"}</dd>
        <dt>Snapshot</dt>
        <dd data-testid="snapshot">
          {phase === PrebuildPhase.SNAPSHOTTING
            ? `${status?.snapshotCompletionPercentage ?? 0}% written`
            : status?.snapshotSizeBytes
              ? formatBytes(status.snapshotSizeBytes)
              : "—"}
        </dd>
        {source?.snapshotImage && (
          <>
            <dt>Snapshot image</dt>
            <dd className="mono" data-testid="snapshot-image">
              {source.snapshotImage}
            </dd>
          </>
        )}
        <dt>Versions</dt>
        <dd>
          spec {String(prebuild.spec?.specVersion ?? 0n)}, status {String(status?.statusVersion ?? 0n)}
        </dd>
      </dl>
      <LogView prebuildId={prebuild.id} logUrl={status?.logUrl ?? ""} finished={finished} />
    </section>
  );
}
