// Keeps the status page current without reloading it: every few seconds it fetches `/` again
// and swaps in the new <main>. The page reads fine without it (the server renders everything).
"use strict";
(function () {
  const seconds = Number(document.body.dataset.refresh) || 5;
  async function refresh() {
    try {
      const response = await fetch(window.location.pathname, { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const next = new DOMParser().parseFromString(await response.text(), "text/html");
      const main = next.querySelector("main");
      if (!main) throw new Error("no <main> in the page");
      document.querySelector("main").replaceWith(document.adoptNode(main));
      document.title = next.title;
      delete document.documentElement.dataset.offline;
    } catch (e) {
      document.documentElement.dataset.offline = "1";
    }
    setTimeout(refresh, seconds * 1000);
  }
  setTimeout(refresh, seconds * 1000);
})();
