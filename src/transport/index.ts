/** The one seam through which the rest of the code talks to NATS. */
export * from './connect.ts';
export * from './nats-server.ts';
export * from './resources.ts';
export * from './subjects.ts';
