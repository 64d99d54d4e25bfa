// kliv's Node 20 adapter for AWS Lambda: runs a Deno-style module (`export default { fetch }`,
// bundled beside this file as function.mjs) behind an API Gateway HTTP API (payload 2.0) or a
// function URL. Deno.env is mapped onto process.env; the verified JWT claims of an API Gateway
// JWT authorizer arrive in `x-kliv-claims`, as under `kliv serve` (a caller's own header of that
// name is dropped). The path the module sees is what follows `/functions/v1/<name>`.
globalThis.Deno ??= {
  env: {
    get: (name) => process.env[name],
    has: (name) => Object.prototype.hasOwnProperty.call(process.env, name),
    toObject: () => ({ ...process.env }),
  },
};

const TEXT = /^(text\/|application\/(json|javascript|xml|x-www-form-urlencoded)|$)/;
let loaded;

function toRequest(event) {
  const headers = new Headers();
  for (const [name, value] of Object.entries(event.headers ?? {})) {
    if (name.toLowerCase() !== "x-kliv-claims") headers.set(name, value);
  }
  if (event.cookies?.length) headers.set("cookie", event.cookies.join("; "));
  const claims = event.requestContext?.authorizer?.jwt?.claims ?? {};
  headers.set("x-kliv-claims", JSON.stringify(claims));
  if (event.requestContext?.requestId) headers.set("x-kliv-request-id", event.requestContext.requestId);
  const route = process.env.KLIV_ROUTE ?? "";
  let path = event.rawPath ?? "/";
  const prefix = `/functions/v1/${route}`;
  const at = route ? path.indexOf(prefix) : -1;
  if (at >= 0 && (path.length === at + prefix.length || path[at + prefix.length] === "/")) {
    path = path.slice(at + prefix.length) || "/";
  }
  const query = event.rawQueryString ? `?${event.rawQueryString}` : "";
  const host = headers.get("host") ?? event.requestContext?.domainName ?? "lambda.local";
  const method = event.requestContext?.http?.method ?? "GET";
  let body;
  if (event.body != null && method !== "GET" && method !== "HEAD") {
    body = event.isBase64Encoded ? Buffer.from(event.body, "base64") : event.body;
  }
  return new Request(`https://${host}${path}${query}`, { method, headers, body });
}

async function fromResponse(response) {
  const headers = {};
  response.headers.forEach((value, name) => {
    if (name !== "set-cookie") headers[name] = value;
  });
  const cookies = response.headers.getSetCookie();
  const buffer = Buffer.from(await response.arrayBuffer());
  const text = TEXT.test(headers["content-type"] ?? "");
  return {
    statusCode: response.status,
    headers,
    cookies,
    body: text ? buffer.toString("utf8") : buffer.toString("base64"),
    isBase64Encoded: !text,
  };
}

function failure(status, code, message) {
  return {
    statusCode: status,
    headers: { "content-type": "application/json", "x-kliv-error": code },
    body: JSON.stringify({ error: code, message }),
    isBase64Encoded: false,
  };
}

export const handler = async (event) => {
  // `http.auth: jwt`: API Gateway's JWT authorizer verifies the token; without its claims (a
  // function URL, a route without the authorizer) the request is refused, never run as anon.
  if (process.env.KLIV_AUTH === "jwt" && !event.requestContext?.authorizer?.jwt?.claims) {
    return failure(401, "unauthorized", "this function needs a JWT verified by the API's JWT authorizer");
  }
  try {
    loaded ??= import("./function.mjs");
    var module = (await loaded).default;
  } catch (error) {
    loaded = undefined;
    console.error("boot failed:", error?.stack ?? String(error));
    return failure(503, "boot-error", "the function failed to load; see its logs");
  }
  try {
    return await fromResponse(await module.fetch(toRequest(event)));
  } catch (error) {
    console.error("uncaught:", error?.stack ?? String(error));
    return failure(500, "function-error", "the function threw an exception");
  }
};
