// An application on node-postgres, connecting with the DATABASE_URL `kliv up` printed, acting as
// PostgREST does: per request, SET LOCAL ROLE and the JWT claims, so that RLS decides.
// Usage: node rls_as_an_app.mjs DATABASE_URL ROLE_PREFIX; prints one JSON object.
import pg from "pg";

const [url, prefix] = process.argv.slice(2);
const alice = "00000000-0000-4000-8000-00000000a11c";
const bob = "00000000-0000-4000-8000-000000000b0b";

async function as(client, role, sub, work) {
  await client.query("BEGIN");
  try {
    await client.query(`SET LOCAL ROLE ${prefix}_${role}`);
    const claims = sub ? { sub, role } : { role };
    await client.query("SELECT set_config('request.jwt.claims', $1, true)", [JSON.stringify(claims)]);
    const result = await work();
    await client.query("COMMIT");
    return result;
  } catch (error) {
    await client.query("ROLLBACK");
    return { error: error.code, message: error.message };
  }
}

const client = new pg.Client({ connectionString: url });
await client.connect();
const out = {};
out.login = (await client.query("SELECT current_user AS u, session_user AS s")).rows[0];
out.withoutRole = await as(client, "anon", null, async () => null).then(async () => {
  try {
    await client.query("SELECT count(*) FROM posts");
    return "read";
  } catch (error) {
    return error.code; // 42501: the login itself holds no table rights (NOINHERIT)
  }
});
for (const [user, name] of [[alice, "alice"], [bob, "bob"]]) {
  await as(client, "authenticated", user, () =>
    client.query("INSERT INTO profiles (username) VALUES ($1)", [name]));
}
await as(client, "authenticated", alice, () =>
  client.query("INSERT INTO posts (title, status) VALUES ('hello', 'published'), ('draft of alice', 'draft')"));
out.forged = await as(client, "authenticated", bob, () =>
  client.query("INSERT INTO posts (title, author_id) VALUES ('forged', $1)", [alice]));
out.anonSees = await as(client, "anon", null, async () =>
  (await client.query("SELECT title FROM posts ORDER BY title")).rows.map((r) => r.title));
out.bobSees = await as(client, "authenticated", bob, async () =>
  (await client.query("SELECT title FROM posts ORDER BY title")).rows.map((r) => r.title));
out.aliceSees = await as(client, "authenticated", alice, async () =>
  (await client.query("SELECT title FROM posts ORDER BY title")).rows.map((r) => r.title));
out.bobDeletes = await as(client, "authenticated", bob, async () =>
  (await client.query("DELETE FROM posts")).rowCount);
out.statementTimeout = (await client.query("SHOW statement_timeout")).rows[0].statement_timeout;
await client.end();
console.log(JSON.stringify(out));
