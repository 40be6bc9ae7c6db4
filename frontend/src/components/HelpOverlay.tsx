export const SHORTCUTS: Array<[string, string]> = [
  ["j / k", "Next / previous step"],
  ["1", "Rate the selected step +1 (good)"],
  ["2", "Rate the selected step 0 (neutral)"],
  ["3", "Rate the selected step −1 (wrong)"],
  ["4", "Mark the selected step unsure"],
  ["1 / 2 / 3 / 4 again", "The same rating again clears it"],
  ["Shift+1…9", "Switch the selected step's 1st…9th safety tag"],
  ["e", "Edit the selected step"],
  ["a", "Alternatives: sample K candidate steps for the selected step (or the last one), scored side by side"],
  ["1…K", "While alternatives wait: pick candidate 1…K (a branch continues from it)"],
  ["y / r", "Verdict: accept / reject (in the review form)"],
  ["s", "Save your review (then the next item opens)"],
  ["n", "Open the next item of your queue"],
  ["Ctrl+Z", "Undo your last label or review change"],
  ["Ctrl+Enter", "Submit the edit (the model continues from it) / continue a stopped trace"],
  ["Enter", "Accept the step (step mode, while the trace waits at the end of a step)"],
  ["p", "Pause / resume: stop a running trace, continue a stopped one"],
  ["Esc", "Stop generation (or cancel the edit, close the alternatives, or close this help)"],
  ["?", "Show / hide this help"],
];

export function HelpOverlay({ onClose }: { onClose: () => void }) {
  return (
    <div className="overlay" data-testid="help-overlay" role="dialog" aria-modal="true" aria-label="Keyboard shortcuts" onClick={onClose}>
      <div className="overlay-box" onClick={(e) => e.stopPropagation()}>
        <h2>Keyboard shortcuts</h2>
        <table className="shortcuts">
          <tbody>
            {SHORTCUTS.map(([k, d]) => (
              <tr key={k}>
                <td>
                  <kbd>{k}</kbd>
                </td>
                <td>{d}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <button onClick={onClose} autoFocus>
          Close
        </button>
      </div>
    </div>
  );
}
