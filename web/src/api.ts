// The API client: the generated Connect-ES client over Connect JSON, on the
// page's own origin, with the signed-in API key as a bearer token.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { PrebuildService } from "./gen/gitpod/v1/prebuild_pb.js";
import { CatalogService } from "./gen/prebuildd/v1/catalog_pb.js";
import { PrebuildSourceService, type PrebuildSource } from "./gen/prebuildd/v1/prebuild_source_pb.js";

/** The key lives in this tab's session storage only: never a cookie, never
 * shared with other tabs, gone when the tab closes. */
const KEY_STORAGE = "prebuildd.apiKey";

export function storedKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key: string): void {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey(): void {
  sessionStorage.removeItem(KEY_STORAGE);
}

/** Called when the server rejects the key, so the page can ask for another. */
let onUnauthenticated: () => void = () => {};
export function setUnauthenticatedHandler(handler: () => void): void {
  onUnauthenticated = handler;
}

const bearer: Interceptor = (next) => async (request) => {
  const key = storedKey();
  if (key) {
    request.header.set("Authorization", `Bearer ${key}`);
  }
  try {
    return await next(request);
  } catch (error) {
    if (ConnectError.from(error).code === Code.Unauthenticated) {
      onUnauthenticated();
    }
    throw error;
  }
};

const transport = createConnectTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: false,
  interceptors: [bearer],
});

export const prebuilds = createClient(PrebuildService, transport);
/** prebuildd's own read-only extensions: names, and what each prebuild builds. */
export const catalog = createClient(CatalogService, transport);
export const sources = createClient(PrebuildSourceService, transport);

/** Project and class names by ID, for showing names where the API has IDs. */
export interface Names {
  projects: Map<string, string>;
  classes: Map<string, string>;
}

export async function loadNames(): Promise<Names> {
  const [projects, classes] = await Promise.all([catalog.listProjects({}), catalog.listEnvironmentClasses({})]);
  return {
    projects: new Map(projects.projects.map((p) => [p.id, p.name])),
    classes: new Map(classes.environmentClasses.map((c) => [c.id, c.name])),
  };
}

/** The sources of these prebuilds, by prebuild ID (none for an empty list). */
export async function loadSources(prebuildIds: string[]): Promise<Map<string, PrebuildSource>> {
  if (prebuildIds.length === 0) return new Map();
  const response = await sources.listPrebuildSources({ prebuildIds });
  return new Map(response.sources.map((s) => [s.prebuildId, s]));
}

/** A readable message for an error from the API (or the network). */
export function describeError(error: unknown): string {
  const connect = ConnectError.from(error);
  return `${Code[connect.code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase()}: ${connect.rawMessage}`;
}

/** Whether an error says the object is gone. */
export function isNotFound(error: unknown): boolean {
  return ConnectError.from(error).code === Code.NotFound;
}
