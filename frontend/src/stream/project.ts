// The project socket, /ws/projects/<id>/ (docs/websocket.md): facts for the team's open pages —
// the queue changed, a run ended. Not sequenced: on every (re)connect the server says "hello" and
// a page re-reads what it shows over REST.
import type { ProjectEvent } from "./protocol";
import { LiveSocket, type ConnStatus, type SocketFactory } from "./socket";

export class ProjectConnection {
  readonly projectId: number;
  status: ConnStatus = "connecting";
  private readonly socket: LiveSocket;
  private listeners = new Set<(e: ProjectEvent) => void>();

  constructor(projectId: number, makeSocket?: SocketFactory) {
    this.projectId = projectId;
    this.socket = new LiveSocket({
      path: () => `/ws/projects/${projectId}/`,
      onMessage: (msg) => {
        if (msg && typeof msg === "object" && typeof (msg as ProjectEvent).type === "string")
          for (const fn of this.listeners) fn(msg as ProjectEvent);
      },
      onStatus: (status) => {
        this.status = status;
      },
      makeSocket,
    });
  }

  on(fn: (e: ProjectEvent) => void): () => void {
    this.listeners.add(fn);
    return () => {
      this.listeners.delete(fn);
    };
  }

  connect(): void {
    this.socket.connect();
  }

  close(): void {
    this.socket.close();
  }
}
