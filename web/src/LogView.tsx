// A prebuild's log, read the way any client reads it: a logs token from
// CreatePrebuildLogsToken, then GET status.logUrl with that token as the
// bearer. The server streams the log while the prebuild runs and closes the
// response when it ends; a stream that breaks off while the prebuild still
// runs is opened again (from the start) a second later.
import { useEffect, useRef, useState } from "react";
import { describeError, prebuilds } from "./api.js";

/** Beyond this, only the log's tail is shown (the page stays responsive). */
const MAX_SHOWN_CHARS = 2 * 1024 * 1024;

type LogState = "connecting" | "streaming" | "ended" | "error";

export function LogView(props: { prebuildId: string; logUrl: string; finished: boolean }) {
  const [text, setText] = useState("");
  const [state, setState] = useState<LogState>("connecting");
  const [error, setError] = useState<string | undefined>(undefined);
  const [attempt, setAttempt] = useState(0);
  const finishedRef = useRef(props.finished);
  finishedRef.current = props.finished;
  const pre = useRef<HTMLPreElement>(null);
  const stickToBottom = useRef(true);

  const url = props.logUrl || `${window.location.origin}/logs/prebuilds/${props.prebuildId}`;

  useEffect(() => {
    const abort = new AbortController();
    let retry: number | undefined;
    const again = () => {
      if (!abort.signal.aborted && !finishedRef.current) {
        retry = window.setTimeout(() => setAttempt((n) => n + 1), 1000);
      }
    };
    (async () => {
      setState("connecting");
      try {
        const { accessToken } = await prebuilds.createPrebuildLogsToken({ prebuildId: props.prebuildId });
        const response = await fetch(url, {
          headers: { Authorization: `Bearer ${accessToken}` },
          signal: abort.signal,
          cache: "no-store",
        });
        if (!response.ok || !response.body) {
          const body = await response.text();
          let message = `HTTP ${response.status}`;
          try {
            const parsed = JSON.parse(body) as { code?: string; message?: string };
            message = `${parsed.code}: ${parsed.message}`;
          } catch {
            // Not a JSON error: keep the status.
          }
          throw new Error(message);
        }
        setState("streaming");
        setError(undefined);
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let received = "";
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          received += decoder.decode(value, { stream: true });
          if (received.length > MAX_SHOWN_CHARS) received = received.slice(received.length - MAX_SHOWN_CHARS);
          setText(received);
        }
        received += decoder.decode();
        setText(received);
        setState("ended");
        again();
      } catch (e) {
        if (abort.signal.aborted) return;
        setError(e instanceof Error && !("code" in e) ? e.message : describeError(e));
        setState("error");
        again();
      }
    })();
    return () => {
      abort.abort();
      window.clearTimeout(retry);
    };
  }, [props.prebuildId, url, attempt]);

  useEffect(() => {
    const element = pre.current;
    if (element && stickToBottom.current) element.scrollTop = element.scrollHeight;
  }, [text]);

  const lines = text === "" ? 0 : text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
  const stateLabel = {
    connecting: "connecting…",
    streaming: "live",
    ended: props.finished ? "complete" : "waiting for more…",
    error: "interrupted",
  }[state];

  return (
    <section className="log">
      <h2>
        Log <span className="muted" data-testid="log-lines">{lines} lines</span>{" "}
        <span className={`log-state log-${state}`} data-testid="log-state">
          {stateLabel}
        </span>
      </h2>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <pre
        ref={pre}
        data-testid="log"
        onScroll={(event) => {
          const element = event.currentTarget;
          stickToBottom.current = element.scrollHeight - element.scrollTop - element.clientHeight < 24;
        }}
      >
        {text}
      </pre>
    </section>
  );
}
