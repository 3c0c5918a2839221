// Sign-in: the API key is checked with one small list call before it is kept.
import { useState, type FormEvent } from "react";
import { describeError, forgetKey, prebuilds, storeKey } from "./api.js";

export function SignIn(props: { notice?: string; onSignedIn: () => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const trimmed = key.trim();
    if (!trimmed) {
      setError("Enter an API key.");
      return;
    }
    setBusy(true);
    setError(undefined);
    storeKey(trimmed);
    try {
      await prebuilds.listPrebuilds({ pagination: { pageSize: 1 } });
      props.onSignedIn();
    } catch (e) {
      forgetKey();
      setError(describeError(e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="signin">
      <h1>prebuildd</h1>
      <form onSubmit={submit}>
        <label htmlFor="api-key">API key</label>
        <input
          id="api-key"
          name="api-key"
          type="password"
          autoComplete="off"
          autoFocus
          value={key}
          onChange={(event) => setKey(event.target.value)}
        />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        <p className="hint">The key is kept in this tab only (session storage) and sent as a bearer token.</p>
        {props.notice && !error && <p className="error">{props.notice}</p>}
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}
