// The prebuilds, newest first (the server's order), filtered by project and
// phase (kept in the URL's query), refreshed every two seconds.
import { useState } from "react";
import { Link, useSearchParams } from "wouter";
import { loadNames, loadSources, prebuilds } from "./api.js";
import { PrebuildPhase, type Prebuild } from "./gen/gitpod/v1/prebuild_pb.js";
import { age, prebuildDuration, prebuildPhaseName, shortId, shortSha, sourceTriggerName, subjectName, triggerName } from "./format.js";
import { useNow, usePolling } from "./usePolling.js";

const PAGE_SIZE = 25;
const POLL_MS = 2000;

/** The phases a filter can ask for (DELETED prebuilds are gone). */
const FILTER_PHASES = [
  PrebuildPhase.PENDING,
  PrebuildPhase.STARTING,
  PrebuildPhase.RUNNING,
  PrebuildPhase.STOPPING,
  PrebuildPhase.SNAPSHOTTING,
  PrebuildPhase.COMPLETED,
  PrebuildPhase.FAILED,
  PrebuildPhase.CANCELLING,
  PrebuildPhase.CANCELLED,
  PrebuildPhase.DELETING,
];

async function loadPages(projectId: string, phase: string, pages: number) {
  const items: Prebuild[] = [];
  let token = "";
  let more = false;
  for (let page = 0; page < pages; page++) {
    const response = await prebuilds.listPrebuilds({
      pagination: { pageSize: PAGE_SIZE, token },
      filter: {
        projectIds: projectId ? [projectId] : [],
        phases: phase ? [Number(phase) as PrebuildPhase] : [],
      },
    });
    items.push(...response.prebuilds);
    token = response.pagination?.nextToken ?? "";
    more = token !== "";
    if (!more) break;
  }
  // Names and sources come from prebuildd's own extension services; a
  // server without them still shows its prebuilds, by ID.
  const [names, sources] = await Promise.all([
    loadNames().catch(() => undefined),
    loadSources(items.map((p) => p.id)).catch(() => new Map()),
  ]);
  return { items, more, names, sources };
}

export function PrebuildList() {
  const [search, setSearch] = useSearchParams();
  const projectId = search.get("project") ?? "";
  const phase = search.get("phase") ?? "";
  const [projectInput, setProjectInput] = useState(projectId);
  const [pages, setPages] = useState(1);
  const now = useNow();
  const { value, error } = usePolling(() => loadPages(projectId, phase, pages), POLL_MS, `${projectId}|${phase}|${pages}`);

  const setFilter = (name: string, filterValue: string) => {
    setPages(1);
    setSearch((previous) => {
      const next = new URLSearchParams(previous);
      if (filterValue) next.set(name, filterValue);
      else next.delete(name);
      return next;
    });
  };

  const seenProjects = [...new Set((value?.items ?? []).map((p) => p.metadata?.projectId ?? ""))].filter(Boolean);
  const knownProjects = value?.names ? [...value.names.projects.keys()] : seenProjects;

  return (
    <section>
      <h1>Prebuilds</h1>
      <form
        className="filters"
        onSubmit={(event) => {
          event.preventDefault();
          setFilter("project", projectInput.trim());
        }}
      >
        <label>
          Project
          <input
            name="project"
            list="seen-projects"
            placeholder="any project (ID; the list names them)"
            value={projectInput}
            onChange={(event) => setProjectInput(event.target.value)}
            onBlur={() => setFilter("project", projectInput.trim())}
          />
          <datalist id="seen-projects">
            {knownProjects.map((id) => (
              <option key={id} value={id}>
                {value?.names?.projects.get(id) ?? id}
              </option>
            ))}
          </datalist>
        </label>
        <label>
          Phase
          <select name="phase" value={phase} onChange={(event) => setFilter("phase", event.target.value)}>
            <option value="">any phase</option>
            {FILTER_PHASES.map((p) => (
              <option key={p} value={String(p)}>
                {prebuildPhaseName(p)}
              </option>
            ))}
          </select>
        </label>
        <button type="submit">Apply</button>
      </form>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {value === undefined && !error && <p className="muted">Loading…</p>}
      {value !== undefined && value.items.length === 0 && <p className="muted">No prebuilds match.</p>}
      {value !== undefined && value.items.length > 0 && (
        <table className="list" data-testid="prebuild-list">
          <thead>
            <tr>
              <th>ID</th>
              <th>Project</th>
              <th>Class</th>
              <th>Branch</th>
              <th>Commit</th>
              <th>Phase</th>
              <th>Trigger</th>
              <th>Creator</th>
              <th>Age</th>
              <th>Duration</th>
            </tr>
          </thead>
          <tbody>
            {value.items.map((prebuild) => {
              const source = value.sources.get(prebuild.id);
              const projectId = prebuild.metadata?.projectId ?? "";
              const classId = prebuild.metadata?.environmentClassId ?? "";
              return (
              <tr key={prebuild.id} data-prebuild-id={prebuild.id}>
                <td className="mono">
                  <Link href={`/prebuilds/${prebuild.id}`}>{prebuild.id}</Link>
                </td>
                <td title={projectId} data-testid="project">
                  {value.names?.projects.get(projectId) ?? shortId(projectId)}
                </td>
                <td title={classId}>{value.names?.classes.get(classId) ?? shortId(classId)}</td>
                <td>{source?.branch || "—"}</td>
                <td className="mono" title={source?.commitSha}>
                  {source?.commitSha ? shortSha(source.commitSha) : "—"}
                </td>
                <td>
                  <Phase phase={prebuild.status?.phase ?? PrebuildPhase.UNSPECIFIED} />
                </td>
                <td>
                  {triggerName(prebuild.metadata?.triggeredBy ?? 0)}
                  {source ? <span className="muted"> ({sourceTriggerName(source)})</span> : null}
                </td>
                <td className="mono" title={subjectName(prebuild.metadata?.creator)}>
                  {shortId(prebuild.metadata?.creator?.id ?? "")}
                </td>
                <td>{age(prebuild.metadata?.createdAt, now)}</td>
                <td>{prebuildDuration(prebuild, now)}</td>
              </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {value?.more && (
        <button type="button" onClick={() => setPages(pages + 1)}>
          Show more
        </button>
      )}
    </section>
  );
}

export function Phase(props: { phase: PrebuildPhase }) {
  const name = prebuildPhaseName(props.phase);
  return <span className={`phase phase-${name.toLowerCase()}`}>{name}</span>;
}
