// How values are shown: phases and triggers by name, ages and durations in
// the largest two units, sizes in binary units.
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  PrebuildMetadata_PrebuildTrigger,
  PrebuildPhase,
  WarmPoolPhase,
  type Prebuild,
} from "./gen/gitpod/v1/prebuild_pb.js";
import { Principal, type Subject } from "./gen/gitpod/v1/identity_pb.js";
import { SourceTrigger, type PrebuildSource } from "./gen/prebuildd/v1/prebuild_source_pb.js";

/** What started a prebuild, finer than the official trigger: api,
 * schedule, push (provider), poll; "incremental" when it was. */
export function sourceTriggerName(source: PrebuildSource | undefined): string {
  if (!source) return "";
  const names: Record<number, string> = {
    [SourceTrigger.API]: "api",
    [SourceTrigger.SCHEDULE]: "schedule",
    [SourceTrigger.PUSH_WEBHOOK]: source.provider ? `push (${source.provider})` : "push",
    [SourceTrigger.POLL]: "poll",
  };
  const name = names[source.trigger] ?? "";
  return source.incremental ? `${name}, incremental` : name;
}

/** The first 12 digits of a commit, as people quote them. */
export function shortSha(sha: string): string {
  return sha.slice(0, 12);
}

export function prebuildPhaseName(phase: PrebuildPhase): string {
  return PrebuildPhase[phase] ?? String(phase);
}

export function warmPoolPhaseName(phase: WarmPoolPhase): string {
  return WarmPoolPhase[phase] ?? String(phase);
}

export function triggerName(trigger: PrebuildMetadata_PrebuildTrigger): string {
  return PrebuildMetadata_PrebuildTrigger[trigger] ?? String(trigger);
}

export function subjectName(subject: Subject | undefined): string {
  if (!subject || !subject.id) return "";
  const kind = Principal[subject.principal]?.toLowerCase().replace(/_/g, " ");
  return kind && subject.principal !== Principal.UNSPECIFIED ? `${subject.id} (${kind})` : subject.id;
}

/** Phases after which a prebuild changes no more (but can still be deleted). */
export const FINAL_PHASES: ReadonlySet<PrebuildPhase> = new Set([
  PrebuildPhase.COMPLETED,
  PrebuildPhase.FAILED,
  PrebuildPhase.CANCELLED,
]);

/** Phases from which CancelPrebuild moves a prebuild on. */
export function canCancel(phase: PrebuildPhase): boolean {
  return [
    PrebuildPhase.PENDING,
    PrebuildPhase.STARTING,
    PrebuildPhase.RUNNING,
    PrebuildPhase.STOPPING,
    PrebuildPhase.SNAPSHOTTING,
  ].includes(phase);
}

export function formatSpan(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${seconds % 60}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h ${minutes % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

export function age(timestamp: Timestamp | undefined, now: number): string {
  return timestamp ? formatSpan(now - timestampMs(timestamp)) : "";
}

export function formatTime(timestamp: Timestamp | undefined): string {
  return timestamp ? new Date(timestampMs(timestamp)).toISOString().replace(".000Z", "Z") : "";
}

/** Creation to completion, or to now while the prebuild is not finished. */
export function prebuildDuration(prebuild: Prebuild, now: number): string {
  const created = prebuild.metadata?.createdAt;
  if (!created) return "";
  const completed = prebuild.status?.completionTime;
  return formatSpan((completed ? timestampMs(completed) : now) - timestampMs(created));
}

export function formatBytes(bytes: bigint): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** A UUID's last 12 digits, for table cells (the full ID is the cell's
 * title). Not its first ones: prebuild and pool IDs are version 7 UUIDs,
 * whose leading digits are a timestamp shared by IDs made close together. */
export function shortId(id: string): string {
  return id.length > 12 ? `…${id.slice(-12)}` : id;
}
