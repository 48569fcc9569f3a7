import { createHash, type Hash } from 'node:crypto';
import type * as Sha256PairModule from '@mkfs-erofs-ts/sha256-pair';
import { optionalAddon } from '../util/addon.js';

type Sha256PairBinding = typeof Sha256PairModule;

/** The SHA-extensions addon (native/sha256-pair), or null when it is not built. */
const sha256Pair = optionalAddon<Sha256PairBinding>('@mkfs-erofs-ts/sha256-pair');

/** Which code computes the chunk thread's SHA-256 digests. */
export type Sha256Implementation = 'sha-extensions' | 'node';

/**
 * A running SHA-256 that can take bytes together with a second one. The chunk thread feeds every new
 * chunk to its file's content digest and to its blob's digest; with the addon both digests take the
 * chunk in one pass, which costs about what one digest costs through node:crypto (see
 * native/sha256-pair). `digest()` ends the digest and starts the next one.
 */
export interface Sha256 {
  update(bytes: Uint8Array): void;
  /** Adds `bytes` to this digest and to `other`. */
  updateWith(other: Sha256, bytes: Uint8Array): void;
  /** The digest of everything added since the last call; the next bytes start a new digest. */
  digest(): Buffer;
}

class NativeSha256 implements Sha256 {
  private readonly state: Uint8Array;

  constructor(private readonly binding: Sha256PairBinding) {
    this.state = new Uint8Array(binding.stateBytes);
    binding.init(this.state);
  }

  update(bytes: Uint8Array): void {
    this.binding.update(this.state, bytes);
  }

  updateWith(other: Sha256, bytes: Uint8Array): void {
    if (other instanceof NativeSha256) {
      this.binding.updatePair(this.state, other.state, bytes);
    } else {
      this.update(bytes);
      other.update(bytes);
    }
  }

  digest(): Buffer {
    const out = Buffer.allocUnsafe(32);
    this.binding.digest(this.state, out);
    this.binding.init(this.state);
    return out;
  }
}

class NodeSha256 implements Sha256 {
  private hash: Hash = createHash('sha256');

  update(bytes: Uint8Array): void {
    this.hash.update(bytes);
  }

  updateWith(other: Sha256, bytes: Uint8Array): void {
    this.hash.update(bytes);
    other.update(bytes);
  }

  digest(): Buffer {
    const out = this.hash.digest();
    this.hash = createHash('sha256');
    return out;
  }
}

/** The implementation a new digest gets: the addon where it is built and the CPU has the SHA extensions. */
export function defaultSha256Implementation(): Sha256Implementation {
  return sha256Pair()?.available === true ? 'sha-extensions' : 'node';
}

export function createSha256(implementation: Sha256Implementation = defaultSha256Implementation()): Sha256 {
  if (implementation === 'node') return new NodeSha256();
  const binding = sha256Pair();
  if (binding === null || !binding.available) throw new Error('SHA-256 with the SHA extensions needs native/sha256-pair built and a CPU that has them');
  return new NativeSha256(binding);
}
