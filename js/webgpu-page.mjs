// A blank page in headless Chromium with a WebGPU adapter (SwiftShader's, a GPU emulated on the
// CPU, where no real GPU is), served with js/ (bundle.mjs), onnxruntime-web's dist (/ort/) and a
// bundle folder (/bundle/): what js/profile-step.mjs --webgpu and js/webgpu-train.mjs run in.
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Serve js/ (bundle.mjs, ort's dist) and the bundle for the page; returns the server. */
function serve(bundleDir) {
  const roots = { '/ort/': path.join(HERE, 'node_modules', 'onnxruntime-web', 'dist'),
                  '/bundle/': bundleDir, '/': HERE };
  const types = { '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html' };
  return http.createServer(async (req, res) => {
    const url = decodeURIComponent(req.url.split('?')[0]);
    if (url === '/') { res.setHeader('Content-Type', 'text/html'); res.end('<!doctype html>'); return; }
    const prefix = Object.keys(roots).find((p) => url.startsWith(p));
    const file = path.join(roots[prefix], path.normalize(url.slice(prefix.length)));
    try {
      res.setHeader('Content-Type', types[path.extname(file)] || 'application/octet-stream');
      res.end(await readFile(file));
    } catch { res.statusCode = 404; res.end(); }
  });
}

/** Call `use(page, logs)` on the page (logs: its console lines so far), then close it all. */
export async function withWebGpuPage(bundleDir, chromiumPath, use) {
  const { chromium } = await import('playwright-core');
  const server = serve(path.resolve(bundleDir));
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true,
    args: ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu',
           '--use-webgpu-adapter=swiftshader', '--enable-features=Vulkan'],
    ignoreDefaultArgs: ['--headless'] });
  try {
    const page = await browser.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(m.text()));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    return await use(page, logs);
  } finally {
    await browser.close();
    server.close();
  }
}
