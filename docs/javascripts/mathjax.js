// MathJax 3 configuration for pymdownx.arithmatex (generic mode).
// Arithmatex wraps math in \( \) and \[ \] inside elements of class "arithmatex";
// only those elements are processed.  The MathJax script itself is loaded by the
// reader's browser (see extra_javascript in mkdocs.yml); the build fetches nothing.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// mkdocs-material's instant navigation swaps page content without a reload;
// typeset again after every page change.
if (typeof document$ !== "undefined") {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.output.clearCache();
      MathJax.typesetClear();
      MathJax.texReset();
      MathJax.typesetPromise();
    }
  });
}
