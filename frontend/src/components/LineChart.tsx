// Live line chart (uPlot, canvas). Series are metric names; x is the training step.
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import { useLatest } from "../lib/hooks";
import "uplot/dist/uPlot.min.css";

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563"];

export type SeriesMap = Record<string, Map<number, number>>;

export function alignSeries(series: SeriesMap, names: string[]): uPlot.AlignedData {
  const steps = new Set<number>();
  for (const n of names) for (const s of series[n]?.keys() ?? []) steps.add(s);
  const xs = [...steps].sort((a, b) => a - b);
  return [xs, ...names.map((n) => xs.map((x) => series[n]?.get(x) ?? null))] as uPlot.AlignedData;
}

export function LineChart({ title, series, names, testId }: { title: string; series: SeriesMap; names: string[]; testId?: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const key = names.join("|");
  // The chart is recreated only when the set of series (or the title) changes; data updates go
  // through setData below. Creation reads the current series through a ref.
  const latest = useLatest({ series, names });
  useEffect(() => {
    if (!box.current) return;
    const { series, names } = latest.current;
    const width = box.current.clientWidth || 480;
    const opts: uPlot.Options = {
      title,
      width,
      height: 220,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      series: [{ label: "step" }, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true }))],
    };
    const u = new uPlot(opts, alignSeries(series, names), box.current);
    plot.current = u;
    const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => {
      if (box.current) u.setSize({ width: box.current.clientWidth || width, height: 220 });
    }) : null;
    ro?.observe(box.current);
    return () => {
      ro?.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [key, title, latest]);
  const data = alignSeries(series, names);
  useEffect(() => {
    plot.current?.setData(data);
  });
  // data-points: how many steps the chart shows (lets tests and screen readers see it update).
  return <div className="chart" ref={box} data-testid={testId} data-points={data[0].length} />;
}
