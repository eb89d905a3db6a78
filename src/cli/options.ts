import { InvalidArgumentError } from 'commander';

/** A commander parser for an integer flag within [min, max]. */
export function intOption(flag: string, min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${flag}: expected an integer from ${min} to ${max}, got "${value}"`);
    }
    return n;
  };
}
