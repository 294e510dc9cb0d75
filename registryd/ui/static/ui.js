// registryd's web interface: the only script (Content-Security-Policy:
// script-src 'self').  It copies pull commands; everything else works
// without it.
"use strict";

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  // No Clipboard API (a plain-HTTP page on another host): select and copy.
  return new Promise(function (resolve, reject) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok = document.execCommand("copy");
    document.body.removeChild(area);
    if (ok) { resolve(); } else { reject(new Error("copy refused")); }
  });
}

document.addEventListener("click", function (event) {
  var button = event.target.closest("button.copy");
  if (!button) { return; }
  var source = document.getElementById(button.dataset.copy);
  var status = button.closest(".pull").querySelector(".copied");
  copyText(source.textContent).then(function () {
    status.textContent = "Copied: " + source.textContent;
  }, function () {
    status.textContent = "Copy failed: select the command and copy it.";
  });
});
