// Worker-thread side of intake-pool.ts: expands one submit and returns its compact stored form.
import type { SubmitRequest } from '../models/api.ts';
import { InputError } from '../models/errors.ts';
import { buildSubmission } from './intake.ts';
import type { IntakeContext } from './intake-pool.ts';
import { encodeStudyJobs } from './jobspecs.ts';

export default function expand({ req, ctx }: { req: SubmitRequest; ctx: IntakeContext }) {
  try {
    const sub = buildSubmission(req, ctx);
    return { ok: true, study: sub.study, jobs: encodeStudyJobs(ctx.studyId, sub.jobs) };
  } catch (e) {
    // Errors cross the thread boundary as plain objects: an InputError keeps its issues.
    if (e instanceof InputError) return { ok: false, what: e.message.split(':\n')[0], issues: [...e.issues] };
    throw e;
  }
}
