import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { api, ApiError, Project, setToken, token } from "./api";
import { Header } from "./components/Header";
import { navigate, useLocation } from "./router";
import { ProjectPage } from "./pages/Project";
import { RunPage } from "./pages/Run";
import { ComparePage } from "./pages/Compare";
import "./style.css";

function Home() {
  const [projects, setProjects] = useState<Project[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api.projects().then((p) => {
      setProjects(p);
      if (p.length === 1) navigate(`/projects/${encodeURIComponent(p[0].name)}`, true);
    }).catch((e) => setError(String(e.message ?? e)));
  }, []);
  if (error) return <div className="error">{error}</div>;
  if (!projects) return <div className="muted pad">Loading projects…</div>;
  if (!projects.length) {
    return (
      <div className="pad">
        <h1>No runs yet</h1>
        <p>Start one with <code>runyard run -- python train.py</code>, or <code>runyard.init()</code> in a script.</p>
      </div>
    );
  }
  return (
    <div className="pad">
      <h1>Projects</h1>
      <ul className="projects">
        {projects.map((p) => (
          <li key={p.name}>
            <a href={`/projects/${encodeURIComponent(p.name)}`} onClick={(e) => { e.preventDefault(); navigate(`/projects/${encodeURIComponent(p.name)}`); }}>
              {p.name}
            </a>{" "}
            <span className="muted">{p.run_count ?? 0} runs</span>
          </li>
        ))}
      </ul>
    </div>
  );
}

function TokenPrompt({ onDone }: { onDone: () => void }) {
  const [value, setValue] = useState("");
  return (
    <form className="pad token" onSubmit={(e) => { e.preventDefault(); setToken(value.trim()); onDone(); }}>
      <h1>This server needs a token</h1>
      <p>Create one with <code>runyard token create NAME --role reader</code> on the server's machine and paste it here.
        It is kept in this browser only.</p>
      <input autoFocus type="password" value={value} onChange={(e) => setValue(e.target.value)} placeholder="token" />
      <button type="submit" disabled={!value.trim()}>Use token</button>
    </form>
  );
}

function App() {
  const { path } = useLocation();
  const [auth, setAuth] = useState<"checking" | "ok" | "needed">("checking");
  useEffect(() => {
    api.health().then(() => setAuth("ok")).catch((e) => {
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        if (token()) setToken(null);
        setAuth("needed");
      } else setAuth("ok"); // the page itself will say what is wrong
    });
  }, [auth === "checking"]);
  if (auth === "checking") return null;
  if (auth === "needed") return <TokenPrompt onDone={() => setAuth("checking")} />;

  let page;
  let project: string | null = null;
  const m = path.match(/^\/(projects|runs)\/(.+)$/);
  if (m && m[1] === "projects") {
    project = decodeURIComponent(m[2]);
    page = <ProjectPage key={project} project={project} />;
  } else if (m && m[1] === "runs") page = <RunPage key={m[2]} ref_={decodeURIComponent(m[2])} />;
  else if (path === "/compare") page = <ComparePage />;
  else page = <Home />;
  return (
    <>
      <Header project={project} />
      <main>{page}</main>
    </>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
