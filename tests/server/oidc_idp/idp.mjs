// A real OpenID Connect provider (node-oidc-provider) for the console's login tests, on loopback.
// Its own login form ("devInteractions") takes any login name; the accounts' claims (groups)
// come from the JSON file given as the only argument:
//   {"issuer": "http://127.0.0.1:PORT", "port": PORT,
//    "client": {"client_id": ..., "client_secret": ..., "redirect_uris": [...]},
//    "accounts": {"anne": {"preferred_username": "anne", "groups": ["..."]}}}
// Prints "ready" on stdout once it listens.
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));

const provider = new Provider(config.issuer, {
  clients: [{
    ...config.client,
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  pkce: { required: () => true },  // like a municipality's IdP should: no code without PKCE
  scopes: ["openid", "profile", "groups"],
  claims: { openid: ["sub"], profile: ["preferred_username", "name"], groups: ["groups"] },
  conformIdTokenClaims: false,  // the claims in the ID token itself, as Entra ID and AD FS can be set to
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["a test key, never used beyond the test"] },
  async findAccount(_ctx, id) {
    const claims = config.accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});
provider.proxy = false;
provider.listen(config.port, "127.0.0.1", () => process.stdout.write("ready\n"));
