/**
 * Revoking a user at once: the key goes on the account JWT's revocation list (auth.ts), and the new account JWT is
 * pushed through the system account (`$SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE`), so every server of the cluster
 * takes it without a restart, disconnects the user, and refuses it from then on.
 */
import { type AuthStore, parseCredentials } from './auth.ts';
import { connectNats, type TlsFiles } from './connect.ts';

/** The server did not take the new account JWT. */
export class RevocationPushError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RevocationPushError';
  }
}

export async function revokeUser(
  store: AuthStore,
  key: string,
  bus: { url: string; tls?: TlsFiles },
): Promise<void> {
  const accountJwt = await store.revoke(key);
  const sys = await store.systemCredentials();
  const nc = await connectNats({
    url: bus.url,
    name: 'plurigrid-revoke',
    firstConnectTimeoutMs: 10_000,
    creds: { key: parseCredentials(sys).key, text: sys },
    tls: bus.tls,
  });
  try {
    const reply = await nc.request(`$SYS.REQ.ACCOUNT.${store.accountKey}.CLAIMS.UPDATE`, accountJwt, {
      timeout: 5_000,
    });
    const body = reply.json() as { data?: { code?: number }; error?: { description?: string } };
    if (body.error || body.data?.code !== 200) {
      throw new RevocationPushError(
        `the server did not take the revocation: ${body.error?.description ?? JSON.stringify(body)}`,
      );
    }
  } finally {
    await nc.close();
  }
}
