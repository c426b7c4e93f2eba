// Result viewer: the slider swaps both slice images (source, and the SEG outlined).
(function () {
  "use strict";
  var viewer = document.getElementById("viewer");
  if (!viewer) { return; }
  var slider = document.getElementById("slice");
  var data = JSON.parse(document.getElementById("slice-data").textContent);
  var job = viewer.dataset.job;
  var win = viewer.dataset.window;
  var source = document.getElementById("img-source");
  var overlay = document.getElementById("img-overlay");
  function url(index, withOverlay) {
    return "/jobs/" + job + "/slices/" + index + ".png?overlay=" + (withOverlay ? 1 : 0) + "&window=" + win;
  }
  function show() {
    var i = parseInt(slider.value, 10);
    var s = data[i];
    source.src = url(i, false);
    overlay.src = url(i, true);
    document.getElementById("slice-label").textContent = (i + 1) + " / " + data.length;
    document.getElementById("slice-uid").textContent = s.sop_instance_uid;
    document.getElementById("slice-pos").textContent = s.position_mm + " mm";
    document.getElementById("slice-mask").textContent = s.mask_area_mm2 + " mm\u00b2 (" + s.mask_pixels + " px)";
  }
  slider.addEventListener("input", show);
  // Preload the neighbours so that dragging is smooth.
  slider.addEventListener("change", function () {
    var i = parseInt(slider.value, 10);
    [i - 1, i + 1].forEach(function (j) {
      if (j >= 0 && j < data.length) { new Image().src = url(j, true); new Image().src = url(j, false); }
    });
  });
}());
