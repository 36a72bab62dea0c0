import { describe, expect, it } from 'vitest';
import { plainMessage, ScramClient } from '../../../src/kafka/sasl.js';

describe('SASL PLAIN (RFC 4616)', () => {
  it('is NUL user NUL password with an empty authorization id', () => {
    expect(plainMessage('cdp', 'pw')).toEqual(Buffer.from('\u0000cdp\u0000pw'));
  });
});

describe('SCRAM (RFC 5802, RFC 7677)', () => {
  it('reproduces the RFC 7677 SCRAM-SHA-256 example exchange', () => {
    const c = new ScramClient('SCRAM-SHA-256', 'user', 'pencil', 'rOprNGfwEbeRWgbNEkqO');
    expect(c.clientFirst().toString()).toBe('n,,n=user,r=rOprNGfwEbeRWgbNEkqO');
    const final = c.clientFinal(Buffer.from('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096'));
    expect(final.toString()).toBe('c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=');
    expect(() => c.verifyServerFinal(Buffer.from('v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='))).not.toThrow();
  });

  it('refuses a server signature that does not match (a broker that does not know the password)', () => {
    const c = new ScramClient('SCRAM-SHA-256', 'user', 'pencil', 'rOprNGfwEbeRWgbNEkqO');
    c.clientFinal(Buffer.from('r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096'));
    expect(() => c.verifyServerFinal(Buffer.from('v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='))).toThrow(/signature does not match/);
  });

  it('refuses a server nonce that does not extend the client nonce', () => {
    const c = new ScramClient('SCRAM-SHA-512', 'user', 'pencil', 'abc');
    expect(() => c.clientFinal(Buffer.from('r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096'))).toThrow(/nonce/);
  });

  it('escapes = and , in user names', () => {
    expect(new ScramClient('SCRAM-SHA-512', 'a=b,c', 'p', 'n').clientFirst().toString()).toBe('n,,n=a=3Db=2Cc,r=n');
  });
});
