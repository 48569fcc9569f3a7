import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the proxy does with one request instead of forwarding it unchanged. */
export type ProxyAction =
  /** Answer without asking the registry. */
  | { respond: { status: number; headers?: Record<string, string>; body?: string } }
  /** Forward, but flip one byte of the answer's body (same length): a registry sending wrong bytes. */
  | { corrupt: true }
  /**
   * Forward an upload's first bytes, then stop reading it and call `hold`; when that resolves the
   * client's connection is dropped (the test kills or restarts the registry inside `hold`).
   */
  | { hold: () => Promise<void> }
  /**
   * Forward, but drop the connection once `afterBytes` of the answer's body went through (a network
   * failure in the middle of a download). `ignoreRange`: ask the registry without the request's Range
   * header (a registry that always sends the whole blob).
   */
  | { cut: { afterBytes: number } }
  | { ignoreRange: true };

export interface ProxyRequestRecord {
  method: string;
  path: string;
  status: number;
  /** Request body bytes forwarded (uploads). */
  requestBytes: number;
  /** The request's Range header, if any. */
  range?: string;
}

export interface FaultProxy {
  /** `127.0.0.1:PORT` of the proxy. */
  host: string;
  /** Decides per request; undefined = forward unchanged. Settable at any time. */
  rule: ((request: IncomingMessage) => ProxyAction | undefined) | undefined;
  /** Every request seen, in order. */
  requests: ProxyRequestRecord[];
  /** Request body bytes sent to blob upload endpoints (POST/PATCH/PUT .../blobs/uploads/...). */
  uploadedBytes(): number;
  /** Tokens issued by the bearer front-end, with the scopes asked for. */
  tokenRequests: Array<{ scopes: string[]; user: string | undefined }>;
}

export interface FaultProxyOptions {
  /**
   * Act as a bearer-token front-end (like Docker Hub's): `/v2/` requests need a token that
   * `/token` hands out for these basic credentials.
   */
  bearer?: { username: string; password: string };
}

/**
 * Runs `fn` with an HTTP proxy (node:http) on 127.0.0.1 in front of the registry at `upstream`
 * (`127.0.0.1:PORT`), which injects faults by `rule` and counts uploaded bytes; closed afterwards.
 */
export async function withFaultProxy<T>(upstream: string, options: FaultProxyOptions, fn: (proxy: FaultProxy) => Promise<T>): Promise<T> {
  const [upstreamHost, upstreamPort] = upstream.split(':') as [string, string];
  const token = randomBytes(16).toString('hex');
  const sockets = new Set<import('node:net').Socket>();
  const proxy: FaultProxy = {
    host: '',
    rule: undefined,
    requests: [],
    tokenRequests: [],
    uploadedBytes: () => proxy.requests.filter((r) => r.path.includes('/blobs/uploads/')).reduce((sum, r) => sum + r.requestBytes, 0),
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const record: ProxyRequestRecord = { method: req.method ?? 'GET', path: url.pathname, status: 0, requestBytes: 0, ...(req.headers.range === undefined ? {} : { range: req.headers.range }) };
    proxy.requests.push(record);
    if (options.bearer !== undefined) {
      if (url.pathname === '/token') {
        const given = /^Basic (.+)$/.exec(req.headers.authorization ?? '')?.[1];
        const [user, password] = given === undefined ? [undefined, undefined] : Buffer.from(given, 'base64').toString().split(':');
        proxy.tokenRequests.push({ scopes: url.searchParams.getAll('scope'), user });
        const ok = user === options.bearer.username && password === options.bearer.password;
        record.status = ok ? 200 : 401;
        res.writeHead(record.status, { 'content-type': 'application/json' });
        res.end(ok ? JSON.stringify({ token }) : '{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}');
        req.resume();
        return;
      }
      if (req.headers.authorization !== `Bearer ${token}`) {
        record.status = 401;
        const repository = /^\/v2\/(.+?)\/(?:manifests|blobs|tags)\//.exec(url.pathname)?.[1];
        const scope = repository === undefined ? '' : `,scope="repository:${repository}:pull"`;
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://${proxy.host}/token",service="test-registry"${scope}`, 'content-type': 'application/json' });
        res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
        req.resume();
        return;
      }
    }
    const action = proxy.rule?.(req);
    if (action !== undefined && 'respond' in action) {
      record.status = action.respond.status;
      res.writeHead(action.respond.status, { 'content-type': 'application/json', ...action.respond.headers });
      res.end(action.respond.body ?? '');
      req.resume();
      return;
    }
    const headers = { ...req.headers, host: upstream };
    delete headers['authorization'];
    if (action !== undefined && 'ignoreRange' in action) delete headers['range'];
    const upstreamRequest = httpRequest({ host: upstreamHost, port: Number(upstreamPort), method: req.method, path: req.url, headers }, (upstreamResponse) => {
      record.status = upstreamResponse.statusCode ?? 0;
      const responseHeaders = { ...upstreamResponse.headers };
      // Locations the registry gives point at itself; the client must come back through us.
      if (typeof responseHeaders.location === 'string') responseHeaders.location = responseHeaders.location.replace(`//${upstream}`, `//${proxy.host}`);
      res.writeHead(upstreamResponse.statusCode ?? 502, responseHeaders);
      let flipped = false;
      let forwardedBytes = 0;
      upstreamResponse.on('data', (chunk: Buffer) => {
        if (action !== undefined && 'corrupt' in action && !flipped && chunk.length > 0) {
          chunk = Buffer.from(chunk);
          chunk[chunk.length - 1] = chunk[chunk.length - 1]! ^ 0xff;
          flipped = true;
        }
        if (action !== undefined && 'cut' in action) {
          if (forwardedBytes >= action.cut.afterBytes) return;
          if (forwardedBytes + chunk.length >= action.cut.afterBytes) {
            const head = chunk.subarray(0, action.cut.afterBytes - forwardedBytes);
            forwardedBytes = action.cut.afterBytes;
            // Sent, then the connection is gone: the client has a body cut short.
            res.write(head, () => {
              upstreamResponse.destroy();
              res.destroy();
              req.socket.destroy();
            });
            return;
          }
          forwardedBytes += chunk.length;
        }
        if (!res.write(chunk)) {
          upstreamResponse.pause();
          res.once('drain', () => upstreamResponse.resume());
        }
      });
      upstreamResponse.on('end', () => res.end());
      upstreamResponse.on('error', () => res.destroy());
    });
    upstreamRequest.on('error', () => {
      // The registry went away (killed mid-request): the client sees its connection dropped.
      req.socket.destroy();
    });
    let held = false;
    req.on('data', (chunk: Buffer) => {
      record.requestBytes += chunk.length;
      if (!upstreamRequest.write(chunk)) {
        req.pause();
        upstreamRequest.once('drain', () => {
          if (!held) req.resume();
        });
      }
      if (action !== undefined && 'hold' in action && !held) {
        held = true;
        req.pause();
        void action.hold().finally(() => {
          upstreamRequest.destroy();
          req.socket.destroy();
        });
      }
    });
    req.on('end', () => upstreamRequest.end());
  };

  const server = createServer(handle);
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    return await fn(proxy);
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
