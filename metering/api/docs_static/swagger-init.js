// Starts Swagger UI on /docs. An external script, not an inline one, so the page's
// Content-Security-Policy can forbid inline scripts. validatorUrl null: Swagger UI would otherwise
// send the spec's URL to an online validator and show its badge (a request off this host).
"use strict";
(function () {
  var openapiUrl = document.currentScript.dataset.openapiUrl;
  window.addEventListener("load", function () {
    window.ui = SwaggerUIBundle({
      url: openapiUrl,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    });
  });
})();
