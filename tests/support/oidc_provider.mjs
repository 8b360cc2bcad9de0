// A real OpenID Connect provider for the sign-in tests: the `oidc-provider` package (npm),
// with its development login and consent pages. Usage:
//   node oidc_provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
// Prints `READY <issuer>` once it listens. Any login name signs in; the account's claims are
// sub = the login name, email = <login>@example.org (verified unless the login starts with
// "unverified"), name = the login name.
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true, methods: ['S256'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['seccollab-test-cookie-key-not-secret'] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.org`, email_verified: !id.startsWith('unverified'), name: `User ${id}` };
      },
    };
  },
});
provider.proxy = false;
// Quiet: the development-interactions warning is expected here.
provider.on('server_error', (ctx, err) => console.error('oidc-provider error:', err));

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
