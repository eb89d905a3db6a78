/** The SIM ledger's public surface: accounts and amounts, postings, the rules and builders, the journal, signing. */
export * from './accounts.ts';
export * from './journal.ts';
export * from './posting.ts';
export * from './rules.ts';
export * from './signed.ts';
