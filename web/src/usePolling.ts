import { useEffect, useRef, useState } from "react";
import { describeError } from "./api.js";

/** Calls `load` now and every `intervalMs` (not overlapping itself), and
 * again whenever `key` changes. Returns the latest value, the latest error
 * (cleared by the next success) and a function to reload at once. */
export function usePolling<T>(load: () => Promise<T>, intervalMs: number, key: string) {
  const [value, setValue] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const loadRef = useRef(load);
  loadRef.current = load;
  const reloadRef = useRef<() => void>(() => {});

  useEffect(() => {
    let stopped = false;
    let timer: number | undefined;
    let running = false;
    let again = false;
    const tick = async () => {
      if (running) {
        again = true;
        return;
      }
      running = true;
      again = false;
      window.clearTimeout(timer);
      try {
        const next = await loadRef.current();
        if (!stopped) {
          setValue(next);
          setError(undefined);
        }
      } catch (e) {
        if (!stopped) setError(describeError(e));
      } finally {
        running = false;
        if (!stopped) timer = window.setTimeout(tick, again ? 0 : intervalMs);
      }
    };
    reloadRef.current = () => void tick();
    setValue(undefined);
    void tick();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [intervalMs, key]);

  return { value, error, reload: () => reloadRef.current() };
}

/** The current time, updated every second, for ages and running durations. */
export function useNow(): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, []);
  return now;
}
