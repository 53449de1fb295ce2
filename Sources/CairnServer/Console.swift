import Hummingbird
import NIOCore

/// The web console: one page that sends SQL to this node's API from the browser.
extension API {
    func addConsole(to router: Router<CairnContext>) {
        router.get("/console") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: Self.consolePage)))
        }
        router.get("/") { _, _ in Response(status: .found, headers: [.location: "/console"]) }
    }

    static let consolePage = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>CairnDB console</title>
        <style>
        body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}textarea{width:100%;height:7rem;font-family:monospace}
        table{border-collapse:collapse;margin-top:1rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;font-family:monospace}
        .error{color:#b00}input{margin-right:1rem}
        </style></head><body>
        <h1>CairnDB console</h1>
        <p>Database <input id="db" value="default" size="12"> Consistency <select id="level"><option>linearizable</option><option>stale</option><option>local</option></select>
        User <input id="user" size="10"> Password <input id="pass" type="password" size="10"> (leave empty on a cluster without auth)</p>
        <textarea id="sql">SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%';</textarea><br>
        <button id="run">Run (Ctrl-Enter)</button> <span id="status"></span>
        <div id="out"></div>
        <script>
        const $ = id => document.getElementById(id);
        function cell(v) { const td = document.createElement('td'); td.textContent = v === null ? 'NULL' : String(v); return td; }
        async function run() {
          const headers = {'Content-Type': 'application/json'};
          if ($('user').value) headers['Authorization'] = 'Basic ' + btoa($('user').value + ':' + $('pass').value);
          const started = performance.now();
          const res = await fetch('/v1/db/' + encodeURIComponent($('db').value) + '/request', {method: 'POST', headers,
            body: JSON.stringify({statements: [$('sql').value], consistency: $('level').value})});
          const body = await res.json().catch(() => ({error: res.statusText}));
          $('status').textContent = res.status + ' in ' + Math.round(performance.now() - started) + ' ms';
          const out = $('out'); out.replaceChildren();
          if (body.error) { const p = document.createElement('p'); p.className = 'error'; p.textContent = body.error; out.append(p); return; }
          for (const r of body.results) {
            if (r.error) { const p = document.createElement('p'); p.className = 'error'; p.textContent = r.error; out.append(p); continue; }
            if (!r.columns) { const p = document.createElement('p'); p.textContent = 'OK, ' + (r.rows_affected || 0) + ' rows affected'; out.append(p); continue; }
            const t = document.createElement('table'); const h = t.insertRow();
            for (const c of r.columns) { const th = document.createElement('th'); th.textContent = c; h.append(th); }
            for (const row of r.rows) { const tr = t.insertRow(); for (const v of row) tr.append(cell(v)); }
            const n = document.createElement('p'); n.textContent = r.rows.length + ' rows'; out.append(t, n);
          }
        }
        $('run').onclick = run;
        $('sql').onkeydown = e => { if (e.key === 'Enter' && e.ctrlKey) run(); };
        </script></body></html>
        """
}
