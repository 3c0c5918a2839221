// The runners the organization's classes run on and, for a remote runner,
// the members of its fleet: the `prebuildd runner` processes attached with
// its ID, connected, away (within the grace period) or gone.
import { catalog } from "./api.js";
import { age } from "./format.js";
import type { CatalogRunner, RunnerMember } from "./gen/prebuildd/v1/catalog_pb.js";
import { usePolling } from "./usePolling.js";

const POLL_MS = 2000;

async function loadRunners(): Promise<CatalogRunner[]> {
  return (await catalog.listRunners({})).runners;
}

function memberState(member: RunnerMember): string {
  if (member.connected) return "connected";
  return member.gone ? "gone" : "away";
}

export function Runners() {
  const { value, error } = usePolling(loadRunners, POLL_MS, "runners");
  const now = Date.now();
  return (
    <section>
      <h1>Runners</h1>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      {value === undefined && !error && <p className="muted">Loading…</p>}
      {value !== undefined && value.length === 0 && <p className="muted">No runners.</p>}
      {value?.map((runner) => (
        <article key={runner.id} className="runner" data-runner-id={runner.id}>
          <h2>
            <span className="mono">{runner.id}</span> <span className="muted">({runner.kind})</span>
          </h2>
          {runner.kind !== "remote" ? (
            <p className="muted">Runs on the server's machine; up to {runner.maxConcurrentPrebuilds} prebuilds at once.</p>
          ) : runner.members.length === 0 ? (
            <p className="muted" data-testid="no-members">
              No member has connected (start prebuildd runner with this runner's ID and token).
            </p>
          ) : (
            <table className="list" data-testid="member-list">
              <thead>
                <tr>
                  <th>Member</th>
                  <th>State</th>
                  <th>Since</th>
                  <th>Engine</th>
                  <th>Version</th>
                  <th>Prebuilds</th>
                  <th>Running</th>
                  <th>Stopped</th>
                </tr>
              </thead>
              <tbody>
                {runner.members.map((member) => (
                  <tr key={member.name} data-member={member.name}>
                    <td className="mono">{member.name}</td>
                    <td data-testid="member-state">
                      <span className={`phase member-${memberState(member)}`}>{memberState(member)}</span>
                    </td>
                    <td title={member.since ? new Date(Number(member.since.seconds) * 1000).toISOString() : ""}>
                      {age(member.since, now)}
                    </td>
                    <td>{member.engine}</td>
                    <td>{member.version}</td>
                    <td data-testid="member-prebuilds">
                      {member.prebuilds} / {member.slots}
                    </td>
                    <td data-testid="member-running">{member.runningInstances}</td>
                    <td data-testid="member-stopped">{member.stoppedInstances}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </article>
      ))}
    </section>
  );
}
