// The page's frame: sign-in, navigation and the routes under /ui/.
import { useEffect, useState } from "react";
import { Link, Route, Router, Switch } from "wouter";
import { forgetKey, setUnauthenticatedHandler, storedKey } from "./api.js";
import { SignIn } from "./SignIn.js";
import { PrebuildList } from "./PrebuildList.js";
import { PrebuildPage } from "./PrebuildPage.js";
import { Runners } from "./Runners.js";
import { WarmPools } from "./WarmPools.js";

export function App() {
  const [signedIn, setSignedIn] = useState(storedKey() !== null);
  const [notice, setNotice] = useState<string | undefined>(undefined);

  useEffect(() => {
    setUnauthenticatedHandler(() => {
      forgetKey();
      setNotice("The server rejected the API key. Sign in again.");
      setSignedIn(false);
    });
  }, []);

  if (!signedIn) {
    return (
      <SignIn
        notice={notice}
        onSignedIn={() => {
          setNotice(undefined);
          setSignedIn(true);
        }}
      />
    );
  }
  return (
    <Router base="/ui">
      <header className="top">
        <span className="brand">prebuildd</span>
        <nav>
          <Link href="/" className={(active) => (active ? "active" : "")}>
            Prebuilds
          </Link>
          <Link href="/warm-pools" className={(active) => (active ? "active" : "")}>
            Warm pools
          </Link>
          <Link href="/runners" className={(active) => (active ? "active" : "")}>
            Runners
          </Link>
        </nav>
        <button
          type="button"
          className="link"
          onClick={() => {
            forgetKey();
            setSignedIn(false);
          }}
        >
          Sign out
        </button>
      </header>
      <main>
        <Switch>
          <Route path="/">
            <PrebuildList />
          </Route>
          <Route path="/prebuilds/:id">{(params) => <PrebuildPage id={params.id} />}</Route>
          <Route path="/warm-pools">
            <WarmPools />
          </Route>
          <Route path="/runners">
            <Runners />
          </Route>
          <Route>
            <p>
              No such page. <Link href="/">Back to the prebuilds</Link>
            </p>
          </Route>
        </Switch>
      </main>
    </Router>
  );
}
