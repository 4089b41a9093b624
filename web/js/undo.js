// Undo and redo by comparing snapshots of the saved form after each user action.
//
// litegraph reports only some changes (adding, removing, connecting); moving nodes and editing
// widgets it does not. Comparing the serialised graph after every pointer-up, key-up and widget
// change catches them all, and a graph of a few dozen nodes serialises in well under a millisecond.

const LIMIT = 100;

export class ChangeTracker {
  /** snapshot(): the graph's state as a plain object; restore(state): put it back. */
  constructor(snapshot, restore, onChange = () => {}) {
    this.snapshot = snapshot;
    this.restore = restore;
    this.onChange = onChange;
    this.undoStack = [];
    this.redoStack = [];
    this.current = null;
    this.paused = false;
    this._pending = null;
  }

  /** Forget the history and take the graph as it is now as the starting point. */
  reset() {
    this.undoStack = [];
    this.redoStack = [];
    this.current = JSON.stringify(this.snapshot());
  }

  /** Record the graph if it changed since the last record. */
  check() {
    if (this.paused || this.current === null) return false;
    const now = JSON.stringify(this.snapshot());
    if (now === this.current) return false;
    this.undoStack.push(this.current);
    if (this.undoStack.length > LIMIT) this.undoStack.shift();
    this.redoStack = [];
    this.current = now;
    this.onChange();
    return true;
  }

  /** check() once the current event has finished (litegraph updates after its handlers). */
  checkSoon() {
    clearTimeout(this._pending);
    this._pending = setTimeout(() => this.check(), 0);
  }

  undo() {
    this.check();
    if (!this.undoStack.length) return false;
    this.redoStack.push(this.current);
    this._apply(this.undoStack.pop());
    return true;
  }

  redo() {
    if (!this.redoStack.length) return false;
    this.undoStack.push(this.current);
    this._apply(this.redoStack.pop());
    return true;
  }

  _apply(state) {
    this.current = state;
    this.paused = true;
    try {
      this.restore(JSON.parse(state));
    } finally {
      this.paused = false;
    }
    this.onChange();
  }
}
